"""The measured evidence in docs/results/small/ can be traced: the report of its run records
gives the committed tables, and every claim in the README's "What it shows" is a line of the
committed comparisons.csv.

A claim reads `` `a` - `b`, classifier at N labels: D points, 95% CI [L, H], p = P, n = K``,
optionally followed by the Holm-adjusted p (`, p_holm = Q`) and the report's verdict
(`: better`, `: worse`, `: no difference detected`), with line breaks anywhere, after the
words naming its dataset (`On Rotated MNIST`, `On Scanned CIFAR-10`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from gksparse.report import write_report

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "docs" / "results" / "small"
DATASETS = {"Rotated MNIST": "mnistrotated", "Scanned CIFAR-10": "cifar10scanned"}
CLAIM = re.compile(
    r"`(?P<a>[^`]+)` - `(?P<b>[^`]+)`, (?P<classifier>[\w -]+?) at (?P<labels>\d+) labels: "
    r"(?P<difference>[-+]?\d+\.\d) points, 95% CI \[(?P<low>[-+]?\d+\.\d), "
    r"(?P<high>[-+]?\d+\.\d)\], p = (?P<p>[\d.]+(?:e-\d+)?), n = (?P<n>\d+)"
    r"(?:, p_holm = (?P<p_holm>[\d.]+))?"
    r"(?:: (?P<verdict>better|worse|no difference detected))?"
)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def claims() -> list[tuple[str, dict[str, str]]]:
    """(dataset, the claim's fields) for every claim in the README's "What it shows"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = " ".join(text.split("What it shows")[1].split("\n## ")[0].split())
    marks = sorted(
        (m.start(), key)
        for name, key in DATASETS.items()
        for m in re.finditer(f"On {re.escape(name)}", section)
    )
    out = []
    for m in CLAIM.finditer(section):
        dataset = next((key for at, key in reversed(marks) if at < m.start()), None)
        out.append((dataset, m.groupdict()))
    return out


def test_the_report_of_the_committed_runs_gives_the_committed_tables(tmp_path):
    write_report(EVIDENCE / "runs", tmp_path)
    for name in ("report.csv", "comparisons.csv"):
        assert rows(tmp_path / name) == rows(EVIDENCE / name), name


@pytest.mark.parametrize(("dataset", "claim"), claims())
def test_each_readme_claim_is_a_line_of_comparisons_csv(dataset, claim):
    assert dataset is not None, f"a claim before any 'On <dataset>' line: {claim}"
    lines = [
        r
        for r in rows(EVIDENCE / "comparisons.csv")
        if (r["dataset"], r["labels"], r["classifier"], r["a"], r["b"])
        == (dataset, claim["labels"], claim["classifier"], claim["a"], claim["b"])
    ]
    assert len(lines) == 1, claim
    line = lines[0]
    assert int(line["n"]) == int(claim["n"])
    for key, name in (("difference", "difference"), ("ci95_low", "low"), ("ci95_high", "high")):
        assert abs(float(line[key]) - float(claim[name])) <= 0.05 + 1e-9, (key, claim)
    for key in ("p", "p_holm"):
        if claim[key]:  # as the prose rounds it: two significant digits
            assert float(claim[key]) == pytest.approx(float(line[key]), rel=0.05, abs=5e-4), key
    if claim["verdict"]:  # the report's verdict, Holm's adjustment included
        assert line["verdict"].startswith(claim["verdict"]), (line["verdict"], claim)


def test_the_readme_makes_claims():
    assert len(claims()) >= 4
