"""The table of datasets: each dataset module declares its own facts (`FACTS`, a `Facts`), and
the config, the loader, the cache command, the sweep and the report read them from here.

Adding a dataset: its module in this package (`NAME`, `FACTS`, and for a generated dataset
`VERSION`, `SEEDED`, `locate` and `generate`, as `mnistrotated`), listed in `MODULES` below,
its `Preset` in `gksparse.protocol.presets`, and its tests.
"""

from __future__ import annotations

from types import ModuleType

from .facts import VIDEO_LABELS, Facts


def _modules() -> dict[str, ModuleType]:
    from . import cifar10scanned, coil100, mnistrotated, necanimal, videos

    return {m.NAME: m for m in (mnistrotated, cifar10scanned, coil100, necanimal, videos)}


MODULES: dict[str, ModuleType] = _modules()  # name -> the dataset's module
CATALOG: dict[str, Facts] = {name: m.FACTS for name, m in MODULES.items()}


def facts(name: str) -> Facts:
    """The `Facts` of dataset `name`; a ValueError (one sentence) naming the datasets."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(CATALOG)}.") from None


def generated() -> tuple[str, ...]:
    """The datasets generated from official files (what the video cache holds)."""
    return tuple(name for name, f in CATALOG.items() if f.generated)


def classified(dataset: str, classify_dataset: str | None = None) -> str:
    """The dataset whose labeled split a run classifies (NEC Animal's is COIL-100)."""
    if classify_dataset:
        return classify_dataset
    f = CATALOG.get(dataset)
    return (f.classify if f else None) or dataset


def x_label(dataset: str) -> str:
    """The x axis of a dataset's plots: what its label budgets count."""
    return CATALOG[classified(dataset)].x_label if dataset in CATALOG else VIDEO_LABELS
