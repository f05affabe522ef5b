"""The Python half of `bench/gpu_check.sh`: what its steps need beyond the project's commands.

    python bench/gpu_check.py info --device cuda      # versions, the GPU, bf16; fails without
    python bench/gpu_check.py tests --device cuda     # the cuda-marked tests; a skip fails
    torchrun --standalone --nproc_per_node=1 bench/gpu_check.py collective --device cuda
    python bench/gpu_check.py compare RESULTS_A RESULTS_B   # two smoke runs, within tolerance
    python bench/gpu_check.py summary RESULTS         # the steps, speeds and projections

`tests` runs `pytest -m cuda` on the operator, model, training and probe tests with
`GKSPARSE_TEST_DEVICE` set to the device (cpu: the CPU against itself); on CUDA a skipped
test (no GPU seen) is a failure. `collective` joins torchrun's process group (NCCL on CUDA,
gloo on the CPU) and checks an all-reduce, an all-gather and a barrier. `compare` reads the
one completed run under each results folder (`<results>/<dataset>/<id>/result.json`) and
compares the reconstruction losses (relative) and test accuracies (in points). `summary`
reads the step table the shell script writes (`steps.tsv`: name, status, seconds, note) and
the benchmarks' logs. `compare` and `summary` need only the standard library (a failed
install still gets its summary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

LOSS_REL = 0.02  # reconstruction losses: relative difference allowed between two runs
ACC_POINTS = 10.0  # test accuracies: difference allowed, in points (6 of smoke's 60 videos)


# -- info and collective (torch) ----------------------------------------------------------
def info(device: str) -> int:
    """Print torch's versions, the device and its bf16; 1 when the device is not there."""
    import torch

    from gksparse.training.runtime import bf16_case

    dev = torch.device(device)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, python {sys.version.split()[0]}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU build" if torch.version.cuda is None else "no GPU visible"
            print(f"error: CUDA is not available (torch {torch.__version__}: {build}).")
            return 1
        props = torch.cuda.get_device_properties(dev)
        name = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}"
        print(f"cuDNN {torch.backends.cudnn.version()}, {torch.cuda.device_count()} GPU(s)")
    else:
        name = f"CPU, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}"
    threads = torch.get_num_threads()
    print(f"device: {dev} ({name}); bf16: {bf16_case(dev)}; torch threads {threads}")
    return 0


TEST_DIRS = ("tests/ops", "tests/model", "tests/training", "tests/evaluation")


class _Skips:
    """A pytest plugin counting skipped tests."""

    def __init__(self) -> None:
        self.count = 0

    def pytest_runtest_logreport(self, report) -> None:
        self.count += bool(report.skipped)


def has_cuda(path: Path) -> bool:
    """Whether a test file marks tests `cuda` (only those files are collected: faster)."""
    return "mark.cuda" in path.read_text(errors="replace")


def tests(device: str) -> int:
    """`pytest -m cuda` on the files of `TEST_DIRS` that mark tests `cuda`, with the device
    under test; 1 on a failure, and on CUDA on a skipped test too."""
    import pytest

    os.environ["GKSPARSE_TEST_DEVICE"] = device
    skips = _Skips()
    files = [str(f) for d in TEST_DIRS for f in sorted(Path(d).rglob("test_*.py")) if has_cuda(f)]
    if not files:
        print(f"error: no cuda-marked test in {', '.join(TEST_DIRS)}.")
        return 1
    args = ["-q", "-p", "no:cacheprovider", "-rs", "-m", "cuda", *files]
    code = int(pytest.main(args, plugins=[skips]))
    if code == 0 and device != "cpu" and skips.count:
        print(f"error: {skips.count} cuda test(s) were skipped: no GPU was seen.")
        return 1
    return code


def collective(device: str) -> int:
    """Under torchrun: all-reduce, all-gather and barrier in the process group; 1 on a wrong sum."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        print("error: collective runs under torchrun (torchrun --nproc_per_node=1 ...).")
        return 1
    dev = torch.device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    dist.init_process_group(backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        t = torch.full((1024,), float(rank + 1), device=dev)
        dist.all_reduce(t)
        ranks: list = [None] * world
        dist.all_gather_object(ranks, rank)
        dist.barrier()
        ok = bool((t == world * (world + 1) / 2).all()) and ranks == list(range(world))
    finally:
        dist.destroy_process_group()
    what = f"all-reduce, all-gather and barrier of {world} process(es) on {dev}"
    print(f"{backend}: {what}: {'ok' if ok else 'WRONG'}")
    return 0 if ok else 1


# -- compare two runs ---------------------------------------------------------------------
def run_result(results: Path) -> dict:
    """The result of the newest completed run under `results` (`<dataset>/<id>/`)."""
    done = []
    for record in results.glob("*/*/run.json"):
        status = json.loads(record.read_text()).get("status")
        result = record.parent / "result.json"
        if status == "COMPLETED" and result.exists():
            done.append((record.stat().st_mtime, result))
    if not done:
        raise SystemExit(f"error: no completed run under {results}.")
    return json.loads(max(done)[1].read_text())


def run_metrics(result: dict) -> dict[str, float]:
    """Reconstruction losses and test accuracies (%) of a protocol's `result.json`."""
    out: dict[str, float] = {}
    for key in ("train_loss", "test_loss"):
        if key in (result.get("pretrain") or {}):
            out[f"reconstruction {key}"] = float(result["pretrain"][key])
    for n, budget in result.get("budgets", {}).items():
        for stage in ("stacked", "finetune"):
            if stage in budget:
                out[f"n={n} {stage} accuracy"] = 100 * budget[stage]["test"]["accuracy"]
        for probe, found in (budget.get("probe") or {}).items():
            out[f"n={n} {probe} probe accuracy"] = 100 * found["accuracy"]
    return out


def differences(a: dict[str, float], b: dict[str, float], loss_rel: float, points: float):
    """Rows (metric, a, b, difference, within tolerance) for the metrics of `a` and `b`."""
    rows = []
    for key in sorted(a.keys() | b.keys()):
        if key not in a or key not in b:
            rows.append((key, a.get(key), b.get(key), None, False))
            continue
        if "loss" in key:
            diff = abs(b[key] - a[key]) / max(abs(a[key]), 1e-12)
            rows.append((key, a[key], b[key], diff, diff <= loss_rel))
        else:
            diff = abs(b[key] - a[key])
            rows.append((key, a[key], b[key], diff, diff <= points))
    return rows


def compare(a: Path, b: Path, loss_rel: float, points: float) -> int:
    """Print the two runs' metrics side by side; 1 when one differs beyond tolerance."""
    rows = differences(run_metrics(run_result(a)), run_metrics(run_result(b)), loss_rel, points)
    print(f"{'metric':<30}{a.name:>14}{b.name:>18}{'difference':>12}")
    for key, x, y, diff, ok in rows:
        unit = "" if diff is None else f"{diff:.1%}" if "loss" in key else f"{diff:.1f} pt"
        show = [f"{v:.5g}" if v is not None else "-" for v in (x, y)]
        print(f"{key:<30}{show[0]:>14}{show[1]:>18}{unit:>12}  {'ok' if ok else 'DIFFERENT'}")
    bad = [r[0] for r in rows if not r[4]]
    limits = f"losses {loss_rel:.0%}, accuracies {points:g} points"
    print(f"{len(rows) - len(bad)} of {len(rows)} metrics within tolerance ({limits})")
    return 1 if bad or not rows else 0


# -- summary ------------------------------------------------------------------------------
def read_steps(results: Path) -> list[tuple[str, str, float, str]]:
    """`steps.tsv`'s rows: (name, status, seconds, note)."""
    rows = []
    path = results / "steps.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, seconds, note = (line.split("\t") + [""] * 4)[:4]
        rows.append((name, status, float(seconds or 0), note))
    return rows


def log_lines(results: Path, step: str) -> list[str]:
    path = results / f"{step}.log"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def step_speeds(results: Path) -> list[str]:
    """Steps per second of `bench/train_step.py`'s log: fp32 and bf16 per config and method."""
    lines = log_lines(results, "train-step")
    bf16 = next((ln.split(": ", 1)[1] for ln in lines if ln.startswith("bf16 (")), "?")
    out = []
    for line in lines:
        f = line.split()
        if len(f) == 12 and f[2].endswith("s") and f[3].endswith("s"):
            try:
                fp32, fast = float(f[2][:-1]), float(f[3][:-1])
            except ValueError:
                continue
            out.append(
                f"  {f[0]:<15}{f[1]:<14}fp32 {1 / fp32:7.2f} steps/s   "
                f"bf16 {1 / fast:7.2f} steps/s ({bf16})"
            )
    return out


def projections(results: Path) -> list[str]:
    """The projected protocol of each `protocol-time-*` log, in hours."""
    out = []
    for log in sorted(results.glob("protocol-time-*.log")):
        lines = log.read_text(errors="replace").splitlines()
        total = [ln for ln in lines if ln.startswith("projected protocol: ")]
        pre = [ln.split() for ln in lines if ln.startswith("pretrain ")]
        if not total:
            continue
        minutes = float(total[-1].split()[2])
        rate = f", pretraining {pre[0][3]} videos/s" if pre and len(pre[0]) >= 4 else ""
        head = next((ln.split() for ln in lines if ln.split()[2:3] == ["on"]), ["?", "?"])
        what = " ".join(head[:2])
        out.append(f"  {what:<29}{minutes / 60:7.2f} h ({minutes:.1f} min){rate}")
    return out


def summary(results: Path, device: str) -> int:
    """Print (and write `summary.txt`) the steps, speeds and projections; 1 unless all passed."""
    steps = read_steps(results)
    where = next((ln for ln in log_lines(results, "info") if ln.startswith("device: ")), "")
    lines = [f"gpu check on {device}: {where or 'device unknown'}; logs in {results}"]
    lines.append(f"{'step':<32}{'status':<10}{'seconds':>8}  note")
    for name, status, seconds, note in steps:
        lines.append(f"{name:<32}{status:<10}{seconds:>8.1f}  {note}")
    speeds, hours = step_speeds(results), projections(results)
    if speeds:
        lines += ["training steps (bench/train_step.py, median step):", *speeds]
    if hours:
        lines += ["projected protocol, one seed (bench/protocol_time.py):", *hours]
    failed = [name for name, status, _, _ in steps if status != "passed"]
    if not steps:
        lines.append(f"gpu check ({device}): no step ran")
    elif failed:
        lines.append(f"gpu check ({device}): {len(failed)} of {len(steps)} steps did not pass: ")
        lines[-1] += ", ".join(failed)
    else:
        lines.append(f"gpu check ({device}): all {len(steps)} steps passed")
    text = "\n".join(lines)
    print(text)
    (results / "summary.txt").write_text(text + "\n")
    return 1 if failed or not steps else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("info", "tests", "collective"):
        sub.add_parser(name).add_argument("--device", default="cuda")
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    cmp.add_argument("--loss-rel", type=float, default=LOSS_REL)
    cmp.add_argument("--points", type=float, default=ACC_POINTS)
    summ = sub.add_parser("summary")
    summ.add_argument("results", type=Path)
    summ.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if args.command == "info":
        return info(args.device)
    if args.command == "tests":
        return tests(args.device)
    if args.command == "collective":
        return collective(args.device)
    if args.command == "compare":
        return compare(args.a, args.b, args.loss_rel, args.points)
    return summary(args.results, args.device)


if __name__ == "__main__":
    sys.exit(main())
