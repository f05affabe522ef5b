"""Which rows of the report to compare, and the paired comparisons themselves.

A row is (dataset, method, ablation, setting, classifier), as `gksparse.report` groups runs;
within one dataset and classifier, `a - b` is compared for
  (a) each pretrained method against the random encoder of its backbone and recurrence
      (`randominitcnn`, `randominitcrnn`; vgg19 and methods outside the table against none);
  (b) group sparsity against plain winner-take-all (`groupwtacnn - wtacnn`, the same for CRNNs);
  (c) each ablation against its full method (`groupwtacnn nospatial - groupwtacnn`);
  (d) every encoder's row against the raw-pixel baseline `pixels` (which has probe rows only);
  (e) rows of one method and ablation whose settings differ in one key only, the later value
      minus the earlier (`epochs=30 - epochs=3`).
Rows of two methods pair only where their settings agree (each row's setting keys against
the other row's config); keys neither method varies are the methods' own (clipnorm).
Runs pair by seed: the seeds both rows have at that label budget. Holm's adjustment runs
over the comparisons of one dataset, label budget and classifier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..data.files import natural_key
from ..model.methods import METHODS
from .statistics import Paired, holm, paired, verdict

Setting = tuple[tuple[str, str], ...]  # (key, value as JSON), sorted by key
Key = tuple[str, str, str, Setting, str]  # dataset, method, ablation, setting, classifier
GROUP_VS_PLAIN = {"groupwtacnn": "wtacnn", "groupwtacrnn": "wtacrnn"}  # (b)
BASELINE = "pixels"  # (d): `gksparse.probe --pixels`'s method


class Scores(Protocol):
    """What a comparison reads of a report row."""

    runs: dict[int, list[tuple[str, float]]]  # label budget -> (seed, test accuracy) per run
    config: dict[str, str]  # the config values its runs share, as JSON text


@dataclass(frozen=True)
class Comparison:
    """Row `a` - row `b` at one label budget and classifier, paired by seed (in points)."""

    dataset: str
    labels: int
    classifier: str
    a: Key
    b: Key
    result: Paired
    p_holm: float | None
    verdict: str


def random_encoder(method: str) -> str | None:
    """The untrained method of the methods table with `method`'s backbone and recurrence, for
    a pretrained `method` (groupwtacrnn -> randominitcrnn); None for the others."""
    m = METHODS.get(method)
    if m is None or not m.pretrained:
        return None
    same = (m.backbone, m.recurrent)
    return next(
        (n for n, r in METHODS.items() if not r.pretrained and (r.backbone, r.recurrent) == same),
        None,
    )


def _later(a: Setting, b: Setting) -> bool:
    """Whether settings `a` and `b` (same keys) differ in one value only, `a`'s the later."""
    if [k for k, _ in a] != [k for k, _ in b]:
        return False
    differ = [(va, vb) for (_, va), (_, vb) in zip(a, b, strict=True) if va != vb]
    if len(differ) != 1:
        return False
    va, vb = differ[0]
    return (natural_key(va), va) > (natural_key(vb), vb)


def _agree(rows: Mapping[Key, Scores], a: Key, b: Key) -> bool:
    """Whether rows `a` and `b` of two methods have one value for every key either varies."""
    ca, cb = rows[a].config, rows[b].config
    return all(ca.get(k) == cb.get(k) for k, _ in (*a[3], *b[3]))


def rule(rows: Mapping[Key, Scores], a: Key, b: Key) -> int | None:
    """Which comparison of the module's list `a - b` is (0 for (a) to 4 for (e)), else None."""
    if a[0] != b[0] or a[4] != b[4] or a == b:
        return None
    (_, ma, xa, sa, _), (_, mb, xb, sb, _) = a, b
    if ma == mb:  # one method: the same setting keys
        if xa and not xb and sa == sb:
            return 2
        return 4 if xa == xb and _later(sa, sb) else None
    if xb or not _agree(rows, a, b):
        return None
    if not xa and mb == random_encoder(ma):
        return 0
    if not xa and mb == GROUP_VS_PLAIN.get(ma):
        return 1
    return 3 if mb == BASELINE else None


def per_seed(runs: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Test accuracy by seed; runs sharing a seed count as their mean."""
    by_seed: dict[str, list[float]] = defaultdict(list)
    for seed, accuracy in runs:
        by_seed[seed].append(accuracy)
    return {seed: sum(v) / len(v) for seed, v in by_seed.items()}


def _pair(a: Sequence[tuple[str, float]], b: Sequence[tuple[str, float]]) -> Paired:
    """`paired` on the seeds both runs lists have, accuracies in points."""
    sa, sb = per_seed(a), per_seed(b)
    shared = [seed for seed in sa if seed in sb]
    return paired([100 * sa[s] for s in shared], [100 * sb[s] for s in shared])


def compare(rows: Mapping[Key, Scores], classifiers: Sequence[str]) -> list[Comparison]:
    """Every comparison of the module's list at every label budget both rows have, by dataset,
    budget and classifier (in the order of `classifiers`), then by kind and row order; p
    Holm-adjusted within each dataset, budget and classifier."""
    found = [(r, a, b) for a in rows for b in rows if (r := rule(rows, a, b)) is not None]
    found.sort(key=lambda item: item[0])  # stable: row order within a kind
    sections: dict[tuple[str, int, str], list[tuple[Key, Key, Paired]]] = defaultdict(list)
    for _, a, b in found:
        for n in sorted(set(rows[a].runs) & set(rows[b].runs)):
            sections[a[0], n, a[4]].append((a, b, _pair(rows[a].runs[n], rows[b].runs[n])))
    out = []
    for (dataset, n, classifier), items in sorted(
        sections.items(), key=lambda s: (s[0][0], s[0][1], classifiers.index(s[0][2]))
    ):
        tested = [(i, result.p) for i, (_, _, result) in enumerate(items) if result.p is not None]
        adjusted = dict(zip([i for i, _ in tested], holm([p for _, p in tested]), strict=True))
        for i, (a, b, result) in enumerate(items):
            p_holm = adjusted.get(i)
            out.append(
                Comparison(dataset, n, classifier, a, b, result, p_holm, verdict(result, p_holm))
            )
    return out
