"""python -m gksparse.sweep DATASET... [options] [with <settings of every cell>]

Runs the grid datasets x methods x ablations x seeds (x the values of each `--vary KEY=V1,V2`),
each cell one ordinary run of `python -m gksparse.run <dataset>` into the results folder, then
writes its report. Rerun the same command to finish a grid: completed cells are skipped, failed
or interrupted ones resumed.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..report import write_report
from . import grid, local
from .cell import COMPLETED, SKIPPED, Outcome
from .plan import RESUME, SKIP, Plan, plan, resolve


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gksparse.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("datasets", nargs="+", help=f"of: {', '.join(grid.CATALOG)}")
    p.add_argument("--methods", default="all", help="comma-separated, or all (default)")
    p.add_argument("--ablations", default="none", help="of none,nospatial,nolifetime")
    p.add_argument("--seeds", default="1", help="comma-separated whole numbers (default 1)")
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="one more axis: every cell once with each KEY=V (any config key; repeatable; "
        "commas inside brackets or quotes stay, e.g. num_labeled=[300],[300,600])",
    )
    p.add_argument("--results", default="results", help="the results folder (default results)")
    p.add_argument("--workers", type=int, help="cells at once here (default: one per core/GPU)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and what would happen")
    s = p.add_argument_group("Slurm (through submitit; pip install -e '.[slurm]')")
    s.add_argument("--slurm", action="store_true", help="one Slurm job per cell")
    s.add_argument("--partition", help="the partition of the jobs")
    s.add_argument("--time", default="4:00:00", help="each job's time limit (default 4:00:00)")
    s.add_argument("--mem", type=float, help="each job's memory in GB")
    s.add_argument("--cpus-per-job", type=int, default=2, help="CPUs (torch threads), default 2")
    s.add_argument("--gpus-per-job", type=int, default=0, help="GPUs; more than 1: torchrun")
    s.add_argument("--array-parallelism", type=int, help="most jobs of an array at once")
    s.add_argument(
        "--slurm-option", action="append", default=[], metavar="KEY=VALUE", help="more sbatch"
    )
    s.add_argument("--no-wait", action="store_true", help="return once the jobs are submitted")
    return p


def _fail(message: str) -> None:
    print(f"error: {message.rstrip('.')}.", file=sys.stderr)
    raise SystemExit(2)


def _slurm_options(args: argparse.Namespace):
    from .slurm import SlurmOptions, parse_time

    extra = []
    for option in args.slurm_option:
        key, sep, value = option.partition("=")
        if not sep or not key:
            _fail(f"--slurm-option {option!r} is not KEY=VALUE (e.g. account=myproject)")
        extra.append((key.lstrip("-").replace("-", "_"), value))
    for name in ("cpus_per_job", "gpus_per_job", "array_parallelism"):
        value = getattr(args, name)
        if value is not None and value < (1 if name != "gpus_per_job" else 0):
            _fail(f"--{name.replace('_', '-')} {value} is not allowed; use a positive number")
    try:
        minutes = parse_time(args.time)
    except ValueError as e:
        _fail(str(e))
    return SlurmOptions(
        partition=args.partition,
        time_min=minutes,
        mem_gb=args.mem,
        cpus=args.cpus_per_job,
        gpus=args.gpus_per_job,
        parallel=args.array_parallelism,
        extra=tuple(extra),
    )


def _cells(args: argparse.Namespace, words: list[str]) -> list[grid.Cell]:
    if args.workers is not None and args.workers < 1:
        _fail(f"--workers {args.workers} is not allowed; use 1 or more")
    try:
        seeds = grid.parse_seeds(args.seeds)
        ablations = grid.parse_names(args.ablations, grid.ABLATIONS, "ablations")
        vary = grid.parse_vary(args.vary)
        methods = grid.parse_methods(args.methods, say=print)
        return grid.cells(args.datasets, methods, ablations, seeds, words, vary)
    except grid.GridError as e:
        _fail(str(e))
    raise AssertionError  # unreachable


def _what(p: Plan) -> str:
    if p.action == SKIP:
        return f"skip, {p.why} in {p.folder}"
    if p.action == RESUME:
        return f"resume {p.folder} ({p.why})"
    return p.action if p.folder is None else f"{p.action}: {p.folder} {p.why}"


def summary(outcomes: list[Outcome]) -> str:
    """One line per cell, then the counts."""
    lines = ["", "sweep summary:"] + [f"  {o.line()}" for o in outcomes]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines.append("  " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return "\n".join(lines)


def _run(args, plans: list[Plan], results: Path) -> tuple[list[Outcome], bool] | None:
    """The cells, here or through Slurm; None after `--no-wait`."""
    if not args.slurm:
        return local.run_local(plans, str(results), args.workers or local.default_workers())
    from . import slurm

    if not shutil.which("sbatch"):
        _fail("--slurm needs Slurm's sbatch on PATH; run on a cluster's login node")
    try:
        jobs = slurm.submit(plans, str(results), _slurm_options(args), str(Path.cwd()))
    except slurm.SlurmError as e:
        _fail(str(e))
    if args.no_wait:
        print(f"{len(jobs)} Slurm jobs queued or running; rerun this command to wait and report.")
        return None
    return slurm.wait(plans, jobs)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    words = argv[argv.index("with") + 1 :] if "with" in argv else []
    args = _parser().parse_args(argv[: argv.index("with")] if "with" in argv else argv)
    cells = _cells(args, words)
    if args.slurm:
        _slurm_options(args)  # refuse bad Slurm options before anything runs
    results = Path(args.results)
    print(f"checking the settings of {len(cells)} cells ...", flush=True)
    try:
        configs = resolve(cells, results)
        grid.check_distinct(cells, configs)
        plans = plan(cells, configs, results)
    except grid.GridError as e:
        _fail(str(e))
    if args.dry_run:
        for p in plans:
            print(f"{p.cell.label}: {_what(p)}")
        return 0
    ran = _run(args, plans, results)
    if ran is None:
        return 0
    outcomes, stopped = ran
    print(summary(outcomes))
    again = shlex.join(["python", "-m", "gksparse.sweep", *argv])
    if stopped:
        print(f"interrupted: what ran is kept; continue with: {again}")
        return 130
    _report(results)
    return 0 if all(o.status in (COMPLETED, SKIPPED) for o in outcomes) else 1


def _report(results: Path) -> None:
    try:
        md = write_report(results)
    except (FileNotFoundError, OSError) as e:
        tqdm.write(f"no report: {e}")
        return
    print(md.read_text(encoding="utf-8"), end="")
    print(f"report: {md}")


if __name__ == "__main__":
    raise SystemExit(main())
