"""python -m gksparse.run DATASET with <method> [nospatial|nolifetime] [small|smoke] seed=N ...

Runs the paper's protocol for one dataset x method x seed from any folder: the settings are
the package's presets (`gksparse.protocol.presets`), everything after `with` is sacred's
command line (`print_config` instead of `with` lists the settings; `help` the options).
`python experiments/<dataset>.py with ...` in a source checkout is the same run.
"""

from __future__ import annotations

import sys

from .protocol.commandline import main as run_experiment
from .protocol.presets import PRESETS


def main(argv: list[str] | None = None) -> None:
    """`argv`: the dataset, then sacred's words (default: the command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return
    if not argv or argv[0] not in PRESETS:
        given = f"unknown dataset {argv[0]!r}" if argv else "no dataset given"
        print(f"error: {given}; use one of: {', '.join(PRESETS)}.", file=sys.stderr)
        raise SystemExit(2)
    dataset, words = argv[0], argv[1:]
    run_experiment(dataset, [f"gksparse.run {dataset}", *words])


if __name__ == "__main__":
    main()
