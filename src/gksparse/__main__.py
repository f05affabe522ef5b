"""gksparse COMMAND ...: one console command beside the `python -m gksparse.<command>` forms.

gksparse run DATASET with <method> ... one experiment (python -m gksparse.run)
gksparse sweep DATASET... [options]    a grid of runs (python -m gksparse.sweep)
gksparse report RESULTS                tables and plots of a results folder
gksparse probe ...                     probes of finished runs, or of the pixels
gksparse features ...                  feature vectors of videos from a trained encoder
gksparse cache list|clear              the generated video cache
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name: (module, its entry point)
    "run": ("gksparse.run", "main"),
    "sweep": ("gksparse.sweep.__main__", "main"),
    "report": ("gksparse.report", "main"),
    "probe": ("gksparse.probe", "main"),
    "features": ("gksparse.features", "cli"),
    "cache": ("gksparse.cache", "main"),
}


def main(argv: list[str] | None = None) -> int:
    """Run the command named by `argv[0]` (default: the command line) with the rest."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"error: unknown command {name!r}; use one of {', '.join(COMMANDS)}.", file=sys.stderr
        )
        return 2
    module, entry = COMMANDS[name]
    sys.argv = [f"gksparse {name}", *rest]  # what the command's own parser reads
    code = getattr(importlib.import_module(module), entry)(rest)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
