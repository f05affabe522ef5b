"""Sacred glue shared by the dataset scripts: named configs, run folders, resume, clean errors.

Every script is `ex = make_experiment(dataset, defaults, small=..., smoke=...)` then
`main(ex)`. The protocol itself lives in `gksparse.protocol`; this file turns sacred's config
into a `ProtocolConfig` (checked whole before any work) and keeps the run folder
`results/<dataset>/<id>/`:
- every record is written atomically with the umask's mode (`RunRecords`), by one process
  at a time (a lock on the folder);
- `with resume=<folder>` continues a run with its saved config; keys given beside it may
  change while the work they decided is not done yet (`gksparse.config.resume_conflicts`),
  and each change is recorded in `changes.json`;
- a bad setting, a damaged record or a failed stage is one sentence and exit code 2; a
  failed run keeps that sentence in `run.json` and `cout.txt`; Ctrl-C prints where the run
  is and the command that resumes it.

Under torchrun (`torchrun --nproc_per_node=N experiments/<dataset>.py with ...`) only rank 0
has the observer, checks the results folder and records the run; it sends its config (seed
included) and run folder to the other ranks, which train with it and write nothing.
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # from sacred

import numpy as np  # noqa: E402
import sacred  # noqa: E402
import torch  # noqa: E402
from sacred import Experiment  # noqa: E402
from sacred.dependencies import gather_sources_and_dependencies  # noqa: E402
from sacred.host_info import host_info_gatherer  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402
from sacred.serializer import flatten  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402

import gksparse  # noqa: E402
from gksparse import distributed, files  # noqa: E402
from gksparse.config import FRESH_HEAD_DATASETS, ConfigError, resume_conflicts  # noqa: E402
from gksparse.models import METHODS  # noqa: E402
from gksparse.protocol import ProtocolConfig, read_result, run_protocol  # noqa: E402

BASE: dict[str, Any] = {
    "method": "groupwtacrnn",
    "spatial": True,  # `nospatial` turns spatial sparsity off
    "lifetime": True,  # `nolifetime` turns lifetime sparsity off
    "data_dir": None,  # None: $GKSPARSE_DATA, else ~/.cache/gksparse
    "results_dir": "results",
    "resume": None,  # a run folder to continue
    "device": None,  # None: CUDA when available, else CPU
    "autocast": False,  # bf16 autocast: faster, not the reference's float32
    "train_size": None,  # a deterministic subset of the training videos
    "test_size": None,
    "zca": None,  # None: as the reference (the dataset's choice, never for vgg19)
    "zca_epsilon": 1e-3,
    "classifier_epochs": None,  # most epochs of each classifier stage; None: epochs
    "patience": 5,
    "lr": 1e-4,
    "finetune_lr": 1e-5,
    "momentum": 0.9,
    "adam": "keras",  # 'keras': Keras 2.2.4's Adam as the reference; 'torch': torch's
    "class_weight": "none",  # 'none': as the reference trained; 'balanced'
    "eval_batch_size": 100,
    "pictures": 4,
    "feature_cache_gb": 2.0,
    "vgg_weights": "IMAGENET1K_V1",
    "progress": True,
    "classify_dataset": None,
    "global_lifetime": True,  # torchrun: lifetime sparsity over the global batch, not per rank
}
ABLATIONS = {"nospatial": {"spatial": False}, "nolifetime": {"lifetime": False}}
DERIVED = ("data_options",)  # computed by a script's config scope from other keys
OPTIONS_HELP = """

Methods:     {methods}
Ablations:   nospatial, nolifetime
Sizes:       small (the protocol in minutes on a CPU), smoke (seconds, for tests);
             none: the paper's sizes
Main options (key=value after `with`; print_config lists them all):
  seed=123                 the paper's seed (a new random one when unset)
  data_dir=DIR             the data root (default $GKSPARSE_DATA, else ~/.cache/gksparse)
  results_dir=DIR          where run folders go (default results)
  resume=FOLDER            continue a run; key=value beside it changes what is not done yet
  device=cpu|cuda          default: CUDA when available
  autocast=True            bf16 autocast (faster; the reference trained in float32)
  epochs=N                 pretraining epochs (and classifier epochs unless classifier_epochs=N)
  num_labeled=[300,600]    label budgets
  train_size=N test_size=N subsets of the videos
  clipnorm=X               Keras' global clipnorm of all stages (the method's by default; 0: off)
  adam=keras|torch         Keras 2.2.4's Adam (the reference) or torch's
  class_weight=none|balanced   unweighted as the reference trained, or balanced
  carry_head=True|False    carry the head and optimizers over between label budgets
  zca=True|False           ZCA whitening (default: the dataset's; never for vgg19)
"""

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """A run stopped with an error sentence (already printed); sacred records it as FAILED."""


def _fail(message: str) -> None:
    """One sentence on stderr and exit code 2 (before any run starts)."""
    if distributed.env_rank() == 0:
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# -- run records ---------------------------------------------------------------------------
class RunRecords(FileStorageObserver):
    """FileStorageObserver writing `<results_dir>/<dataset>/<id>/`, or into `resume`.

    Every file is written atomically with the umask's mode; a new folder is held (locked)
    by this process from its creation; a resumed run keeps its first start time, lists its
    resumes, and its `cout.txt` continues the earlier output.
    """

    def __init__(self) -> None:
        super().__init__("results")
        self.resume_dir: Path | None = None
        self.cout_before = ""
        self.error: str | None = None  # the sentence a failed run ended with

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        self.resume_dir = Path(config["resume"]) if config.get("resume") else None
        base = self.resume_dir.parent if self.resume_dir else Path(config["results_dir"])
        if not self.resume_dir:
            base = base / config["dataset"]
        self.initialize(base, base / "_resources", base / "_sources", None, self.priority)
        before: dict[str, Any] = {}
        if self.resume_dir:
            before = _read_json(self.resume_dir / "run.json", optional=True) or {}
            cout = self.resume_dir / "cout.txt"
            if cout.is_file():
                stamp = start_time.isoformat(timespec="seconds")
                self.cout_before = cout.read_text(errors="replace") + f"\n--- resumed {stamp}\n"
        _id = super().started_event(ex_info, command, host_info, start_time, config, meta_info, _id)
        if before.get("start_time"):
            self.run_entry["start_time"] = before["start_time"]
            self.run_entry["resumed"] = [*before.get("resumed", []), start_time.isoformat()]
            self.save_json(self.run_entry, "run.json")
        return _id

    def _make_run_dir(self, _id):
        if self.resume_dir:
            self.dir = str(self.resume_dir)  # already held (see `plan_resume`)
        else:
            super()._make_run_dir(_id)
            files.hold_folder(self.dir)

    def save_json(self, obj, filename):
        text = json.dumps(flatten(obj), sort_keys=True, indent=2)
        files.atomic_write_text(Path(self.dir) / filename, text)

    def save_cout(self):
        files.atomic_write_text(Path(self.dir) / "cout.txt", self.cout_before + self.cout)
        self.cout_write_cursor = len(self.cout)

    def failed_event(self, fail_time, fail_trace):
        if self.error and self.error not in self.cout:  # printed after the last capture
            self.cout += f"error: {self.error}\n"
            self.save_cout()
        super().failed_event(fail_time, fail_trace)


def _read_json(path: Path, *, optional: bool = False, what_to_do: str = "") -> Any:
    """A run record's JSON; a missing (unless `optional`) or damaged one is `_fail`."""
    if not path.is_file():
        if optional:
            return None
        _fail(f"the run record {path} is missing; {what_to_do or 'start a new run instead'}.")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        _fail(f"the run record {path} is damaged ({e}); {what_to_do or 'start a new run instead'}.")


# -- resume --------------------------------------------------------------------------------
def plan_resume(dataset: str, updates: dict[str, Any], named: list[str]) -> dict[str, Any] | None:
    """The config that continues the run folder `updates['resume']`, or None when it is
    finished and nothing changes (then it says so). Refuses (`_fail`) a folder of another
    dataset, a damaged record, a folder in use, named configs, and changes to keys that
    finished work depended on; records accepted changes in `changes.json`."""
    folder = Path(str(updates["resume"])).expanduser()
    if not (folder / "config.json").is_file():
        _fail(
            f"resume={folder} is not a run folder (no config.json in it); pass a folder like "
            "results/<dataset>/<id>."
        )
    if named:
        _fail(
            f"resume= continues a run with its saved config, so it takes no named configs "
            f"({', '.join(named)}); give changes as key=value."
        )
    try:
        files.hold_folder(folder)
    except files.FolderInUse as e:
        _fail(str(e))
    files.remove_temporary_files(folder)  # left by a killed writer
    saved = _read_json(folder / "config.json")
    record = _read_json(
        folder / "run.json",
        optional=True,
        what_to_do="delete it and resume again (the run's other records are intact)",
    )
    _read_json(
        folder / "metrics.json",
        optional=True,
        what_to_do="delete it (the metrics logged so far are lost) or restore it, then resume",
    )
    if not isinstance(saved, dict) or "dataset" not in saved:
        _fail(f"the run record {folder / 'config.json'} is not a run's config; start a new run.")
    if saved["dataset"] != dataset:
        script = "videos" if saved["dataset"] == "videos" else saved["dataset"]
        _fail(
            f"{folder} is a run of {saved['dataset']}, not {dataset}; resume it with: python "
            f"experiments/{script}.py with resume={folder}"
        )
    try:
        result = read_result(folder)
    except RuntimeError as e:
        _fail(str(e))
    new = {k: v for k, v in saved.items() if k not in DERIVED}
    new.update(updates)
    new["resume"] = str(folder)
    try:
        ProtocolConfig.from_dict(new)
    except ConfigError as e:
        _fail(str(e))
    started = result.get("pretrain") is not None or (folder / "pretrain_state.pt").is_file()
    budgets = [n for n in saved.get("num_labeled", []) if str(n) in result["budgets"]]
    conflicts = resume_conflicts(saved, new, pretraining_started=started, finished_budgets=budgets)
    if conflicts:
        _fail(
            f"resume={folder} cannot change {conflicts[0]}; start a new run instead (the same "
            "command without resume=, with the settings you want)."
        )
    changes = [
        (key, saved.get(key), new.get(key))
        for key in sorted(set(saved) | set(new))
        if key not in ("resume", *DERIVED) and saved.get(key) != new.get(key)
    ]
    finished = result.get("pretrain") is not None and all(
        str(n) in result["budgets"] for n in new.get("num_labeled", [])
    )
    if (
        finished
        and (record or {}).get("status") == "COMPLETED"
        and distributed.env_world_size() == 1
    ):
        print(f"{folder} is finished (status COMPLETED): nothing to do, nothing changed.")
        print(result_table(result, new.get("num_labeled", []), folder))
        return None
    if changes:
        log_path = folder / "changes.json"
        history = _read_json(log_path, optional=True, what_to_do="delete it and resume") or []
        when = datetime.datetime.now().isoformat(timespec="seconds")
        history += [{"time": when, "key": k, "old": old, "new": v} for k, old, v in changes]
        files.write_json(history, log_path)
        for key, old, value in changes:
            print(f"resume: {key} {old!r} -> {value!r} (recorded in {log_path})")
    return new


# -- output --------------------------------------------------------------------------------
def result_table(result: dict[str, Any], budgets: list[int], folder: Path | str) -> str:
    """A small table: test accuracy (%) per label budget, stacked and end-to-end."""
    lines = [f"test accuracy (%) of {folder}:", "  labels   stacked   end-to-end"]
    for n in budgets:
        b = result.get("budgets", {}).get(str(n))
        if b is None:
            continue
        cells = [f"{100 * b[s]['test']['accuracy']:9.1f}" for s in ("stacked", "finetune")]
        lines.append(f"  {n:>6} {cells[0]} {cells[1]:>12}")
    pre = result.get("pretrain") or {}
    if "test_loss" in pre:
        lines.append(
            f"  reconstruction loss: train {pre['train_loss']:.4g}, test {pre['test_loss']:.4g}"
        )
    return "\n".join(lines)


def _resume_hint(dataset: str, folder: str) -> str:
    world = distributed.env_world_size()
    launcher = f"torchrun --nproc_per_node={world}" if world > 1 else "python"
    return f"{launcher} experiments/{dataset}.py with resume={folder}"


# -- the experiment ------------------------------------------------------------------------
class GkExperiment(Experiment):
    """sacred's Experiment with resume and one-sentence failures (see the module docstring)."""

    records: RunRecords | None = None
    interrupted_in: str | None = None  # the run folder when Ctrl-C stopped a run

    def run(
        self,
        command_name=None,
        config_updates=None,
        named_configs=(),
        info=None,
        meta_info=None,
        options=None,
    ):
        updates = dict(config_updates or {})
        main_run = (command_name or self.default_command) == "run"
        if main_run and updates.get("resume") and distributed.env_rank() == 0:
            # the other ranks of torchrun get rank 0's merged config in `run`
            merged = plan_resume(self.path, updates, list(named_configs))
            if merged is None:
                raise SystemExit(0)
            updates, named_configs = merged, ()
        try:
            return super().run(command_name, updates, named_configs, info, meta_info, options)
        except RunFailed:
            raise SystemExit(2) from None


@host_info_gatherer("torch")
def _torch_info() -> dict[str, Any]:
    info: dict[str, Any] = {"version": str(torch.__version__)}
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def make_experiment(
    dataset: str, defaults: dict[str, Any], *, small: dict[str, Any], smoke: dict[str, Any]
) -> GkExperiment:
    """A sacred experiment for `dataset` with the methods, ablations, `small` and `smoke`.

    Called from the dataset script, which becomes the run's main file (and, with this file,
    its saved sources).
    """
    script = inspect.stack()[1][0].f_globals
    ex = GkExperiment(dataset, save_git_info=False, additional_host_info=[_torch_info])
    ex.base_dir = str(Path(script["__file__"]).resolve().parent)
    ex.mainfile, ex.sources, ex.dependencies = gather_sources_and_dependencies(
        script, False, ex.base_dir
    )
    for package in (torch, np, sacred, gksparse):  # sacred takes no local part ('+cpu')
        ex.add_package_dependency(package.__name__, package.__version__.split("+")[0])
    methods = textwrap.fill(", ".join(METHODS), 90, subsequent_indent=" " * 13)
    ex.doc = (script.get("__doc__") or "").strip() + OPTIONS_HELP.format(methods=methods)
    ex.captured_out_filter = apply_backspaces_and_linefeeds  # progress bars: final frames only
    ex.add_config({**BASE, "dataset": dataset, **defaults})

    @ex.config
    def derived(method, dataset, classify_dataset):
        # The reference's rules per method and dataset (METHOD.md 5.1, 5.2), written out so
        # that config.json says what ran; each may be set on the command line.
        clipnorm = METHODS[method].clipnorm if method in METHODS else 0.0  # noqa: F841
        carry_head = (classify_dataset or dataset) not in FRESH_HEAD_DATASETS  # noqa: F841

    @ex.config_hook
    def check_settings(config, command_name, logger):
        if command_name == "run":  # not for print_config and the like
            try:
                ProtocolConfig.from_dict(config)
            except ConfigError as e:
                _fail(str(e))
        return {}

    for name in METHODS:
        ex.add_named_config(name, {"method": name})
    for name, cfg in {**ABLATIONS, "small": small, "smoke": smoke}.items():
        ex.add_named_config(name, cfg)
    if distributed.env_rank() == 0:  # under torchrun, rank 0 alone records the run
        ex.logger = _logger()
        ex.records = RunRecords()
        ex.observers.append(ex.records)
    else:
        ex.logger = logging.getLogger(f"{dataset}.rank{distributed.env_rank()}")
        ex.logger.setLevel(logging.ERROR)

    @ex.main
    def run(_config, _run):
        """Run the protocol: pretrain, then stacked and end-to-end per label budget."""
        folder = None
        try:
            distributed.setup(_config["device"])
            config = None
            if distributed.is_main():
                config, folder = ex.records.config, ex.records.dir  # on resume: merged config
                print(f"run folder: {folder}")
            config, folder = distributed.broadcast_object((config, folder))
            cfg = ProtocolConfig.from_dict(config)
            if distributed.is_main():
                device = str(distributed.local_device(torch.device(cfg.device or _default())))
                ex.records.run_entry["device"] = device
                ex.records.save_json(ex.records.run_entry, "run.json")
            log_fn = lambda name, value, step: _run.log_scalar(name, value, step)  # noqa: E731
            result = run_protocol(cfg, folder, log_fn)
            if distributed.is_main():
                print(result_table(result, cfg.num_labeled, folder))
                print(f"run folder: {folder}")
            return result
        except (ValueError, RuntimeError, OSError, ImportError) as e:
            where = f" (rank {distributed.env_rank()})" if distributed.env_rank() else ""
            message = f"{str(e).rstrip('.')}{where}"
            if folder is not None and distributed.env_rank() == 0:  # what is done is kept
                message += f"; to continue once fixed: {_resume_hint(ex.path, folder)} [key=value]."
            print(f"error: {message}", file=sys.stderr)
            if ex.records is not None:
                ex.records.error = message
            sys.stdout.flush()
            sys.stderr.flush()
            _run._get_captured_output()  # keep the last lines: sacred stops capturing first
            raise RunFailed(message) from None
        except KeyboardInterrupt:
            if folder is not None and distributed.env_rank() == 0:
                ex.interrupted_in = folder
            raise
        finally:
            distributed.cleanup()

    return ex


def _default() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class _NoResultLine(logging.Filter):
    """Drop sacred's 'Result: {...}' line: the run prints its own table."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Result: ")


def _logger() -> logging.Logger:
    """sacred's own logger (the root logger, its format), without the 'Result: ...' line."""
    logger = logging.getLogger()
    if not any(isinstance(f, _NoResultLine) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
        handler.addFilter(_NoResultLine())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


# -- the command line ----------------------------------------------------------------------
def check_command_line(ex: Experiment, argv: list[str]) -> None:
    """Reject unknown named configs and config keys and an unwritable results folder with
    one sentence each, before sacred starts a run."""
    if "with" not in argv:
        return
    args = argv[argv.index("with") + 1 :]
    keys = set(BASE) | set(ex.configurations[0]._conf) | {"seed", "clipnorm", "carry_head"}
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
    if distributed.env_rank() != 0 or "resume" in values:  # the folders are rank 0's business
        return
    results = Path(values.get("results_dir", "results").strip("'\""))
    try:
        results.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=results).close()
    except OSError as e:
        _fail(
            f"cannot write run records to {results} ({e.strerror}); pass "
            "results_dir=<a writable folder>."
        )


def main(ex: GkExperiment) -> None:
    """The scripts' entry point: check the command line, then let sacred run; Ctrl-C ends
    with one line saying where the run is and how to resume it."""
    check_command_line(ex, sys.argv)
    try:
        ex.run_commandline()
    except KeyboardInterrupt:
        folder = getattr(ex, "interrupted_in", None) or (ex.records and ex.records.dir)
        if distributed.env_rank() == 0:
            if folder:
                hint = _resume_hint(ex.path, folder)
                print(f"\ninterrupted: the run is in {folder}; resume it with: {hint}")
            else:
                print("\ninterrupted before the run started.")
        raise SystemExit(130) from None
