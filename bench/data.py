"""Benchmark: generate all 70000 Rotated MNIST videos, then load them from the cache.

Each stage runs in a fresh process, so its peak memory (max RSS) is its own. Prints the
times, the peak memory, and the ratio of the loading process's peak to the size of the
training set in float32 (60000 x 36 x 1 x 14 x 14 x 4 bytes = 1.69 GB; the target is <= ~1.2).

    python bench/data.py                       # MNIST from $GKSPARSE_DATA or ../shared/data
    python bench/data.py --data-dir DIR --cache-dir DIR --keep

The cache is written to a temporary folder (removed afterwards unless --keep). Loading is
measured with the cache files in the page cache, as right after generation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GB = 1e9


def peak_rss(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in bytes (Linux reports kilobytes)."""
    return resource.getrusage(who).ru_maxrss * 1024.0


def stage_generate(args: argparse.Namespace) -> dict:
    from gksparse.data import load
    from gksparse.data.parallel import cores

    start = time.perf_counter()
    data = load(
        "mnistrotated",
        args.data_dir,
        seed=args.seed,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "videos": len(data.train) + len(data.test),
        "cores": cores(),
        "peak_rss": peak_rss(),
        "peak_rss_workers": peak_rss(resource.RUSAGE_CHILDREN),
    }


def stage_load(args: argparse.Namespace) -> dict:
    import numpy as np

    from gksparse.data import load

    start = time.perf_counter()
    data = load(
        "mnistrotated", args.data_dir, seed=args.seed, cache_dir=args.cache_dir, progress=False
    )
    opened = time.perf_counter() - start
    videos = data.train.videos
    start = time.perf_counter()
    total = 0.0
    for i in range(0, len(videos), 2000):  # touch every training frame once
        total += float(np.asarray(videos[i : i + 2000]).sum(dtype=np.float64))
    read = time.perf_counter() - start
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    train, val, _ = data.labeled_split(1000, rng)
    split = time.perf_counter() - start
    return {
        "open_seconds": opened,
        "read_seconds": read,
        "split_seconds": split,
        "train_bytes": int(videos.nbytes),
        "is_memmap": isinstance(videos, np.memmap),
        "mean_pixel": total / videos.size,
        "peak_rss": peak_rss(),
    }


def run_stage(stage: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--cache-dir",
        args.cache_dir,
        "--seed",
        str(args.seed),
    ]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.quiet:
        command.append("--quiet")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, check=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data root with mnist/ (default $GKSPARSE_DATA, else ../shared/data)",
    )
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the cache folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--stage", choices=["generate", "load"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = (stage_generate if args.stage == "generate" else stage_load)(args)
        print(json.dumps(result))
        return
    if args.data_dir is None and not os.environ.get("GKSPARSE_DATA"):
        args.data_dir = str(REPO.parent / "shared" / "data")
    temporary = args.cache_dir is None
    if temporary:
        args.cache_dir = tempfile.mkdtemp(prefix="gksparse-bench-")
    try:
        gen = run_stage("generate", args)
        first = run_stage("load", args)
        second = run_stage("load", args)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(args.cache_dir, ignore_errors=True)
    size = first["train_bytes"]
    print(f"Rotated MNIST, {gen['videos']} videos of 36x1x14x14 float32, {gen['cores']} cores")
    print(
        f"  generate and cache:  {gen['seconds']:7.1f} s  "
        f"({gen['videos'] / gen['seconds']:.0f} videos/s); peak RSS main "
        f"{gen['peak_rss'] / GB:.2f} GB, largest worker {gen['peak_rss_workers'] / GB:.2f} GB"
    )
    for name, run in (("load (1st process)", first), ("load (2nd process)", second)):
        print(
            f"  {name}:  open {run['open_seconds']:.3f} s, read all training videos "
            f"{run['read_seconds']:.1f} s, labeled split n=1000 {run['split_seconds']:.2f} s; "
            f"peak RSS {run['peak_rss'] / GB:.2f} GB"
        )
    print(
        f"  training set {size / GB:.2f} GB; loading peak / training set = "
        f"{max(first['peak_rss'], second['peak_rss']) / size:.2f} (target <= ~1.2); "
        f"memory-mapped: {first['is_memmap']}"
    )


if __name__ == "__main__":
    main()
