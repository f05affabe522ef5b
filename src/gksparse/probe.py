"""Probes of finished runs, and the raw-pixel baseline, from the command line.

    python -m gksparse.probe RUN_FOLDER [--budgets 300,600] [--data-dir DIR] [--device DEV]
    python -m gksparse.probe --pixels DATASET [--results DIR] [with <words>]

The first adds a linear and a k-NN probe (`gksparse.evaluation.vectors`) of the frozen encoder
to every finished label budget of a completed run (of any method, also one made before the
probes existed): the data are rebuilt from the run's `config.json` as the protocol built
them, `probe` is written into each budget of `result.json` and the metrics into
`metrics.json`, each atomically. Probing again gives the same numbers.

The second is the `pixels` baseline: the same probes on the frames as loaded (whitened where
the dataset whitens), flattened and averaged over each video's real frames, recorded as a run
folder of its own (`<results>/<dataset>/<next id>`, method `pixels`) that `gksparse.report`
lists beside the encoders. The words after `with` are resolved as the experiment script
would resolve them (`gksparse.protocol.commandline.resolve`; groupwtacnn where no method is
named).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .data.containers import VideoData
from .data.files import FolderInUse
from .evaluation import vectors
from .model.methods import METHODS
from .protocol import stages
from .protocol.config import ProtocolConfig
from .protocol.pipeline import Protocol, load_data
from .protocol.rundir.folder import RunFolder
from .protocol.rundir.records import CONFIG, METRICS, RUN, RecordError, RunFolderError
from .training import runtime

PIXELS = "pixels"  # the method name of the baseline's run folders
RESOLVE_METHOD = "groupwtacnn"  # the method its config is resolved with (the data need one)
Say = Callable[[str], None]


def _now() -> str:
    return datetime.datetime.now().isoformat()


class MetricsLog:
    """A `log_fn` that collects metrics and merges them into sacred's metrics.json layout
    (`{name: {"steps": [...], "values": [...], "timestamps": [...]}}`)."""

    def __init__(self) -> None:
        self.logged: dict[str, dict[str, list[Any]]] = {}

    def __call__(self, name: str, value: float, step: int) -> None:
        entry = self.logged.setdefault(name, {"steps": [], "values": [], "timestamps": []})
        entry["steps"].append(int(step))
        entry["values"].append(float(value))
        entry["timestamps"].append(_now())

    def merged(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """`metrics` with the collected names replaced (so probing again rewrites them)."""
        return {**(metrics or {}), **self.logged}


def finished_run(folder: str | Path) -> tuple[RunFolder, dict[str, Any], dict[str, Any]]:
    """(the run folder, its config, its result) of a completed run; a `RunFolderError` (one
    sentence) for a folder that is missing, not a run, unfinished or damaged."""
    run = RunFolder(folder)
    if not run.path.is_dir() or not run.is_run():
        raise RunFolderError(
            f"{run.path} is not a run folder (no config.json, run.json or result.json in it); "
            "pass a folder like results/<dataset>/<id>."
        )
    status = run.status()
    if status != "COMPLETED":
        raise RunFolderError(
            f"the run {run.path} is not finished (status {status}); resume it to the end, "
            "then probe it."
        )
    return run, run.config(), run.read_result()


def chosen_budgets(run: RunFolder, result: dict[str, Any], asked: list[int] | None) -> list[int]:
    """The finished budgets to probe: `asked` (all of them if None), each finished."""
    done = [n for n in run.finished_budgets(result) if isinstance(result["budgets"][str(n)], dict)]
    if not done:
        raise RunFolderError(f"the run {run.path} has no finished label budget to probe.")
    missing = [n for n in asked or [] if n not in done]
    if missing:
        raise RunFolderError(
            f"the run {run.path} has no finished label budget {', '.join(map(str, missing))} "
            f"(its budgets: {', '.join(map(str, done))})."
        )
    return asked or done


def pixel_budget(
    cfg: ProtocolConfig, cls: VideoData, n: int, log_fn: Callable[[str, float, int], None]
) -> dict[str, Any]:
    """The pixels baseline of budget `n`: the split's sizes and `probe` on pixel vectors."""
    started = time.perf_counter()
    splits = cls.labeled_split(n, stages.labeled_split_rng(cfg, n))
    pixels = [vectors.pixel_vectors(s) for s in splits]
    log_fn(f"n{n}.probe.features_seconds", time.perf_counter() - started, 0)
    device = runtime.default_device(cfg.device)
    probe = vectors.probe_budget(
        pixels,
        splits,
        n=n,
        num_classes=cls.num_classes,
        seed=cfg.seed,
        log_fn=log_fn,
        device=device,
    )
    log_fn(f"n{n}.probe.seconds", time.perf_counter() - started, 0)
    sizes = dict(zip(("n_train", "n_val", "n_test"), map(len, splits), strict=True))
    return {**sizes, "probe": probe}


def _classification_data(cfg: ProtocolConfig) -> VideoData:
    cls = load_data(cfg, cfg.progress)[1]
    if cls.split == "none":
        raise ValueError(f"{cls.name} has no labels, so there is nothing to probe.")
    return cls


def _settings(config: dict[str, Any], data_dir: str | None, device: str | None) -> ProtocolConfig:
    """The run's `ProtocolConfig` for probing here: its data and seed, this machine's device."""
    settings = {**config, "device": device, "progress": sys.stderr.isatty()}
    if data_dir:
        settings["data_dir"] = data_dir
    if settings.get("method") == PIXELS:
        settings["method"] = RESOLVE_METHOD  # its zca was saved as resolved
    return ProtocolConfig.from_dict(settings)


def probe_run(
    folder: str | Path,
    budgets: list[int] | None = None,
    *,
    data_dir: str | None = None,
    device: str | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Add `probe` to the finished budgets (`budgets`; None: all) of the completed run in
    `folder` and their metrics to its metrics.json; returns the new result.

    A `pixels` run folder gets its pixel probes again. Errors: `RunFolderError` (the folder),
    `ConfigError` (its config), `FolderInUse`, OSError, ValueError (its data).
    """
    run, config, result = finished_run(folder)
    budgets = chosen_budgets(run, result, budgets)
    metrics = run.read_json(METRICS, optional=True, todo="delete it or restore it, then probe")
    cfg = _settings(config, data_dir, device)
    log = MetricsLog()
    if config["method"] == PIXELS:
        run.hold()
        cls = _classification_data(cfg)
        probes = {n: pixel_budget(cfg, cls, n, log)["probe"] for n in budgets}
    else:
        protocol = Protocol(cfg, run.path, log)  # holds the folder
        cls = _classification_data(cfg)
        probes = {n: protocol.probe(cls, n) for n in budgets}
    for n, probe in probes.items():
        result["budgets"][str(n)]["probe"] = probe
        if not cfg.progress:  # else the protocol said them under its progress bars
            for line in vectors.probe_lines(probe, n):
                say(line)
    run.write_result(result)
    run.write_json(METRICS, log.merged(metrics), sort_keys=True)
    return result


def resolved_config(dataset: str, words: Sequence[str]) -> dict[str, Any]:
    """The config `python -m gksparse.run <dataset> with <words>` would run with (with
    method groupwtacnn when the words name none); a ValueError sentence for bad words."""
    from .protocol.commandline import resolve

    words = list(words)
    if not any(w in METHODS or w.split("=", 1)[0] == "method" for w in words):
        words = [RESOLVE_METHOD, *words]
    answer = resolve(dataset, [words])[0]
    if "error" in answer:
        raise ValueError(answer["error"])
    return answer["config"]


def new_run_folder(base: Path) -> RunFolder:
    """The next numbered run folder of `base`, created and held, numbered as sacred numbers
    runs (one more than the largest numeric folder name; the next on a race)."""
    base.mkdir(parents=True, exist_ok=True)
    last = max((int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()), default=0)
    for run_id in range(last + 1, last + 1001):
        try:
            (base / str(run_id)).mkdir()
        except FileExistsError:
            continue
        run = RunFolder(base / str(run_id))
        run.hold()
        return run
    raise RunFolderError(f"cannot make a new run folder in {base}: too many runs started at once.")


def probe_pixels(
    dataset: str, words: Sequence[str] = (), results: str | Path | None = None, say: Say = print
) -> Path:
    """Record the pixels baseline of `dataset` (settings: `with <words>`) as a new run folder
    of `results` (default: the config's results_dir); returns the folder."""
    config = resolved_config(dataset, words)
    cfg = _settings(config, None, config.get("device"))
    results = Path(results or config.get("results_dir") or "results")
    run = new_run_folder(results / dataset)
    say(f"run folder: {run.path}")
    run.write_json(
        CONFIG, {**config, "method": PIXELS, "results_dir": str(results)}, sort_keys=True
    )
    record = {"command": "probe --pixels", "status": "RUNNING", "start_time": _now()}
    run.write_json(RUN, record)
    log, result = MetricsLog(), {"pretrain": None, "budgets": {}}
    try:
        cls = _classification_data(cfg)
        for n in cfg.num_labeled:
            result["budgets"][str(n)] = pixel_budget(cfg, cls, n, log)
            run.write_result(result)
            for line in vectors.probe_lines(result["budgets"][str(n)]["probe"], n):
                say(line)
        run.write_json(METRICS, log.merged(None), sort_keys=True)
    except BaseException as e:
        failed = "FAILED" if isinstance(e, Exception) else "INTERRUPTED"
        run.write_json(
            RUN, {**record, "status": failed, "stop_time": _now(), "fail_trace": [str(e)]}
        )
        raise
    run.write_json(RUN, {**record, "status": "COMPLETED", "stop_time": _now()})
    return run.path


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the options, the words after `with`)."""
    argv = list(argv)
    words = argv[argv.index("with") + 1 :] if "with" in argv else []
    argv = argv[: argv.index("with")] if "with" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m gksparse.probe",
        description="Linear and k-NN probes of a finished run, or of the raw pixels.",
        epilog="The pixels baseline: python -m gksparse.probe --pixels DATASET "
        "[--results DIR] [with <words>], e.g. with small seed=1.",
    )
    parser.add_argument("run", nargs="?", help="a finished run folder, results/<dataset>/<id>")
    parser.add_argument("--budgets", help="label budgets to probe, e.g. 300,600 (default: all)")
    parser.add_argument("--data-dir", help="the data root (default: the run's data_dir)")
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when available)")
    parser.add_argument("--pixels", metavar="DATASET", help="record the raw-pixel baseline")
    parser.add_argument("--results", help="where --pixels puts its run folder (default: results)")
    args = parser.parse_args(argv)
    if (args.run is None) == (args.pixels is None):
        parser.error("give a run folder, or --pixels DATASET")
    if words and not args.pixels:
        parser.error("'with <words>' goes with --pixels DATASET")
    try:
        args.budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else None
    except ValueError:
        parser.error(f"--budgets {args.budgets} is not a list of label budgets, e.g. 300,600")
    return args, words


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 when done, 2 with one sentence on stderr when it cannot be."""
    args, words = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.pixels:
            folder = probe_pixels(args.pixels, words, args.results)
        else:
            probe_run(args.run, args.budgets, data_dir=args.data_dir, device=args.device)
            folder = Path(args.run)
    except (RunFolderError, RecordError, FolderInUse, OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"probes written to {folder / 'result.json'} and {folder / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
