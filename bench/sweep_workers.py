"""How to split a CPU between a sweep's cells: one worker with all cores' threads against
one worker per core with one thread each, on the same grid, side by side.

    python bench/sweep_workers.py [--rounds 2] [--cells 2] [with <settings>]

Each round runs the grid `mnistrotated` x `groupwtacnn` x seeds 1..cells (default a
`smoke`-sized protocol of a few hundred videos) twice, in fresh results folders, once with
`--workers 1` and once with `--workers <cores>`, in alternating order, so that drifting load
hits both alike; it prints each sweep's wall time and the ratio per round (above 1: the
cores split between workers won). `gksparse.sweep`'s default follows what this measured.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data")
WORDS = ["smoke", "train_size=600", "test_size=200", "epochs=2", f"data_dir={DATA}"]


def sweep_seconds(workers: int, cells: int, words: list[str], cache: str) -> float:
    """Wall time of one sweep of `cells` cells with `workers` workers, from nothing."""
    with tempfile.TemporaryDirectory() as results:
        seeds = ",".join(str(s) for s in range(1, cells + 1))
        command = [sys.executable, "-m", "gksparse.sweep", "mnistrotated", "--methods"]
        command += ["groupwtacnn", "--seeds", seeds, "--results", results]
        command += ["--workers", str(workers), "with", *words]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "GKSPARSE_CACHE": cache},
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"the sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return seconds


def main() -> None:
    argv = sys.argv[1:]
    words = argv[argv.index("with") + 1 :] if "with" in argv else WORDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cells", type=int, default=2)
    args = parser.parse_args(argv[: argv.index("with")] if "with" in argv else argv)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as cache:
        sweep_seconds(1, 1, words, cache)  # warm-up: the data cache, the imports
        ratios = []
        for r in range(args.rounds):
            order = [1, cores] if r % 2 == 0 else [cores, 1]
            t = {w: sweep_seconds(w, args.cells, words, cache) for w in order}
            ratios.append(t[1] / t[cores])
            print(
                f"round {r + 1}: 1 worker x {cores} threads {t[1]:.0f} s, "
                f"{cores} workers x 1 thread {t[cores]:.0f} s, ratio {ratios[-1]:.2f}",
                flush=True,
            )
    ratios.sort()
    print(
        f"median ratio (1 x {cores} threads) / ({cores} x 1 thread): {ratios[len(ratios) // 2]:.2f}"
    )


if __name__ == "__main__":
    main()
