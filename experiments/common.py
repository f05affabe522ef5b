"""Sacred glue shared by the dataset scripts: named configs, run folders, clean errors.

Every script is `make_experiment(dataset, defaults, small=..., smoke=...)` then `main(ex)`.
The protocol itself lives in `gksparse.protocol`; this file only turns sacred's config into
a `ProtocolConfig` and a run folder `results/<dataset>/<id>/`.

Under torchrun (`torchrun --nproc_per_node=N experiments/<dataset>.py with ...`) only rank 0
has the observer, checks the results folder and records the run; it sends its config (seed
included) and run folder to the other ranks, which train with it and write nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # from sacred

from sacred import Experiment  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402

from gksparse import distributed  # noqa: E402
from gksparse.models import METHODS  # noqa: E402
from gksparse.protocol import ProtocolConfig, run_protocol  # noqa: E402

# Keys that may change when a run is resumed; everything else comes from its config.json.
RUNTIME_KEYS = ("resume", "device", "autocast", "progress", "data_dir", "results_dir")

BASE: dict[str, Any] = {
    "method": "groupwtacrnn",
    "spatial": True,  # `nospatial` turns spatial sparsity off
    "lifetime": True,  # `nolifetime` turns lifetime sparsity off
    "data_dir": None,  # None: $GKSPARSE_DATA, else ~/.cache/gksparse
    "results_dir": "results",
    "resume": None,  # a run folder to continue
    "device": None,  # None: CUDA when available, else CPU
    "autocast": None,  # bf16 autocast; None: on for CUDA only
    "train_size": None,  # a deterministic subset of the training videos
    "test_size": None,
    "zca_epsilon": 1e-3,
    "classifier_epochs": None,  # most epochs of each classifier stage; None: epochs
    "patience": 5,
    "lr": 1e-4,
    "finetune_lr": 1e-5,
    "momentum": 0.9,
    "eval_batch_size": 100,
    "pictures": 4,
    "feature_cache_gb": 2.0,
    "vgg_weights": "IMAGENET1K_V1",
    "progress": True,
    "classify_dataset": None,
    "global_lifetime": True,  # torchrun: lifetime sparsity over the global batch, not per rank
}
ABLATIONS = {"nospatial": {"spatial": False}, "nolifetime": {"lifetime": False}}


class RunFolders(FileStorageObserver):
    """FileStorageObserver writing to `<results_dir>/<dataset>/<id>/`, or into `resume`."""

    def __init__(self) -> None:
        super().__init__("results")
        self.resume_dir: str | None = None

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        base = Path(config["results_dir"]) / config["dataset"]
        self.initialize(base, base / "_resources", base / "_sources", None, self.priority)
        self.resume_dir = config.get("resume")
        if self.resume_dir:  # keep the run's own config; only runtime keys may change
            config = {**_saved_config(self.resume_dir), **{k: config[k] for k in RUNTIME_KEYS}}
        return super().started_event(
            ex_info, command, host_info, start_time, config, meta_info, _id
        )

    def _make_run_dir(self, _id):
        if self.resume_dir:
            self.dir = str(self.resume_dir)
        else:
            super()._make_run_dir(_id)


def make_experiment(
    dataset: str, defaults: dict[str, Any], *, small: dict[str, Any], smoke: dict[str, Any]
) -> Experiment:
    """A sacred experiment for `dataset` with the methods, ablations, `small` and `smoke`."""
    ex = Experiment(dataset, save_git_info=False)
    ex.add_config({**BASE, "dataset": dataset, **defaults})

    @ex.config
    def derived(method):
        clipnorm = 1.0 if METHODS[method].recurrent else None  # noqa: F841 (a config entry)

    for name in METHODS:
        ex.add_named_config(name, {"method": name})
    for name, cfg in {**ABLATIONS, "small": small, "smoke": smoke}.items():
        ex.add_named_config(name, cfg)
    if distributed.env_rank() == 0:  # under torchrun, rank 0 alone records the run
        ex.observers.append(RunFolders())
    else:
        quiet = logging.getLogger(f"{dataset}.rank{distributed.env_rank()}")
        quiet.setLevel(logging.ERROR)
        ex.logger = quiet

    @ex.main
    def run(_config, _run):
        try:
            distributed.setup(_config["device"])
            config, folder = None, None
            if distributed.is_main():
                observer = next(o for o in _run.observers if isinstance(o, RunFolders))
                config, folder = observer.config, observer.dir  # on resume: its saved config
                print(f"run folder: {folder}")
            config, folder = distributed.broadcast_object((config, folder))
            return run_protocol(
                ProtocolConfig.from_dict(config),
                folder,
                lambda name, value, step: _run.log_scalar(name, value, step),
            )
        except (ValueError, RuntimeError, OSError, ImportError) as e:
            where = f" (rank {distributed.env_rank()})" if distributed.env_rank() else ""
            print(f"error{where}: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            distributed.cleanup()

    return ex


def _saved_config(run_dir: str) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "config.json").read_text())


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_command_line(ex: Experiment, argv: list[str]) -> None:
    """Reject unknown named configs and config keys, a bad `resume` folder and an
    unwritable results folder with one sentence each, before sacred starts a run."""
    if "with" not in argv:
        return
    args = argv[argv.index("with") + 1 :]
    keys = set(BASE) | set(ex.configurations[0]._conf) | {"seed", "clipnorm"}
    named = set(ex.named_configs)
    values: dict[str, str] = {}
    for arg in args:
        if arg.startswith("-"):
            break
        if "=" in arg:
            key, value = arg.split("=", 1)
            if key.split(".")[0] not in keys:
                _fail(f"unknown config key {key!r}; valid keys: {', '.join(sorted(keys))}.")
            values[key] = value
        elif arg not in named and not Path(arg).is_file():
            _fail(
                f"unknown method or config {arg!r}; methods: {', '.join(METHODS)}; "
                f"configs: {', '.join(sorted(named - set(METHODS)))}."
            )
    if distributed.env_rank() != 0:  # the folders are rank 0's business
        return
    if "resume" in values:
        folder = Path(values["resume"].strip("'\""))
        if not (folder / "config.json").is_file():
            _fail(
                f"resume={folder} is not a run folder (no config.json in it); pass a folder "
                "like results/<dataset>/<id>."
            )
    results = Path(values.get("results_dir", "results").strip("'\""))
    try:
        results.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=results).close()
    except OSError as e:
        _fail(
            f"cannot write run records to {results} ({e.strerror}); pass "
            "results_dir=<a writable folder>."
        )


def main(ex: Experiment) -> None:
    """The scripts' entry point: check the command line, then let sacred run."""
    check_command_line(ex, sys.argv)
    ex.run_commandline()
