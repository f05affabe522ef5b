"""Sacred glue shared by the dataset scripts: named configs, records, resume, clean errors.

Every script is `ex = make_experiment(dataset, defaults, small=..., smoke=...)` then
`main(ex)`. The protocol lives in `gksparse.protocol.pipeline`, the settings' defaults and rules in
`gksparse.protocol.config` (sacred's config is generated from them), the run folder and resume
planning in `gksparse.protocol.rundir`; this file connects them to sacred's command line:
- sacred's records go into the run folder `results/<dataset>/<id>/` (`records.RunRecords`);
- `with resume=<folder>` continues a run with its saved config; keys given beside it may
  change while the work they decided is not done yet (`gksparse.protocol.rundir.plan_resume`), and
  each change is recorded in `changes.json`;
- a bad setting, a damaged record or a failed stage is one sentence and exit code 2; a
  failed run keeps that sentence in `run.json` and `cout.txt`; Ctrl-C prints where the run
  is and the command that resumes it.

Under torchrun (`torchrun --nproc_per_node=N experiments/<dataset>.py with ...`) only rank 0
has the observer, checks the results folder and records the run; it sends its config (seed
included) and run folder to the other ranks, which train with it and write nothing.
"""

from __future__ import annotations

import inspect
import json
import logging
import signal
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
from records import RunRecords  # noqa: E402
from sacred import Experiment  # noqa: E402
from sacred.arg_parser import get_config_updates  # noqa: E402
from sacred.dependencies import gather_sources_and_dependencies  # noqa: E402
from sacred.host_info import host_info_gatherer  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402

import gksparse  # noqa: E402
from gksparse import distributed, files, runtime  # noqa: E402
from gksparse.model.methods import METHODS  # noqa: E402
from gksparse.protocol.config import ConfigError, ProtocolConfig, defaults, rules  # noqa: E402
from gksparse.protocol.pipeline import run_protocol  # noqa: E402
from gksparse.protocol.rundir.records import RunFolderError  # noqa: E402
from gksparse.protocol.rundir.resume import plan_resume  # noqa: E402
from gksparse.report import run_table  # noqa: E402

DERIVED = ("data_options",)  # computed by a script's config scope from other keys
# sacred's config: every ProtocolConfig default (sacred draws the seed), and where runs go
BASE: dict[str, Any] = {
    **{k: v for k, v in defaults().items() if k not in ("seed", *DERIVED)},
    "results_dir": "results",
    "resume": None,
}
ABLATIONS = {"nospatial": {"spatial": False}, "nolifetime": {"lifetime": False}}
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


class RunFailed(Exception):
    """A run stopped with an error sentence (already printed); sacred records it as FAILED."""


def _exit(message: str) -> None:
    """One sentence on stderr and exit code 2 (before any run starts)."""
    if distributed.env_rank() == 0:
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# -- resume --------------------------------------------------------------------------------
def resume_config(dataset: str, updates: dict[str, Any], named: list[str]) -> dict[str, Any] | None:
    """The config that continues the run folder `updates['resume']`, or None when it is
    finished and nothing changes (then it says so). Refuses (`_exit`) what
    `rundir.plan_resume` refuses, and named configs; records accepted changes."""
    try:
        plan = plan_resume(updates["resume"], dataset, updates, derived=DERIVED)
    except (RunFolderError, ConfigError, files.FolderInUse) as e:
        _exit(str(e))
    if named:
        _exit(
            f"resume= continues a run with its saved config, so it takes no named configs "
            f"({', '.join(named)}); give changes as key=value."
        )
    folder = plan.folder.path
    if plan.finished and distributed.env_world_size() == 1:
        print(f"{folder} is finished (status COMPLETED): nothing to do, nothing changed.")
        print(run_table(plan.result, plan.config.get("num_labeled", []), folder))
        return None
    if plan.changes:
        try:
            plan.folder.record_changes(plan.changes)
        except RunFolderError as e:
            _exit(str(e))
        for key, old, value in plan.changes:
            print(f"resume: {key} {old!r} -> {value!r} (recorded in {folder / 'changes.json'})")
    return plan.config


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
            merged = resume_config(self.path, updates, list(named_configs))
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
    _add_rules_and_checks(ex)
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
    ex.main(_main_function(ex))
    return ex


def _add_rules_and_checks(ex: GkExperiment) -> None:
    """The reference's rules per method and dataset (`gksparse.protocol.config.rules`), written out
    so that config.json says what ran (each may be set on the command line), and the check
    of every setting before a run starts."""

    @ex.config
    def derived(method, dataset, classify_dataset):
        clipnorm = rules(method, dataset, classify_dataset)["clipnorm"]  # noqa: F841
        carry_head = rules(method, dataset, classify_dataset)["carry_head"]  # noqa: F841

    @ex.config_hook
    def check_settings(config, command_name, logger):
        if command_name == "run":  # not for print_config and the like
            try:
                ProtocolConfig.from_dict(config)
            except ConfigError as e:
                _exit(str(e))
        return {}


def _main_function(ex: GkExperiment):
    """sacred's main function of `ex`: the protocol, one sentence for what stops it."""

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
                device = torch.device(cfg.device) if cfg.device else runtime.default_device()
                ex.records.run_entry["device"] = str(distributed.local_device(device))
                ex.records.save_json(ex.records.run_entry, "run.json")
            log_fn = lambda name, value, step: _run.log_scalar(name, value, step)  # noqa: E731
            result = run_protocol(cfg, folder, log_fn)
            if distributed.is_main():
                print(run_table(result, cfg.num_labeled, folder))
                print(f"run folder: {folder}")
            return result
        except (ValueError, RuntimeError, OSError, ImportError) as e:
            _failed(ex, _run, e, folder)
        except KeyboardInterrupt:
            if folder is not None and distributed.env_rank() == 0:
                ex.interrupted_in = folder
            raise
        finally:
            distributed.cleanup()

    return run


def _failed(ex: GkExperiment, _run, e: Exception, folder: str | None) -> None:
    """Print the error sentence (and how to continue), keep it in the records, raise
    `RunFailed`."""
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
def check_words(ex: Experiment, args: list[str]) -> dict[str, str]:
    """The `key=value` words of `args` (what follows `with`), by key; a ValueError (one
    sentence) for an unknown named config or config key."""
    keys = set(BASE) | set(ex.configurations[0]._conf) | {"seed"}
    named = set(ex.named_configs)
    values: dict[str, str] = {}
    for arg in args:
        if arg.startswith("-"):
            break
        if "=" in arg:
            key, value = arg.split("=", 1)
            if key.split(".")[0] not in keys:
                raise ValueError(
                    f"unknown config key {key!r}; valid keys: {', '.join(sorted(keys))}."
                )
            values[key] = value
        elif arg not in named and not Path(arg).is_file():
            raise ValueError(
                f"unknown method or config {arg!r}; methods: {', '.join(METHODS)}; "
                f"configs: {', '.join(sorted(named - set(METHODS)))}."
            )
    return values


def check_command_line(ex: Experiment, argv: list[str]) -> None:
    """Reject unknown named configs and config keys and an unwritable results folder with
    one sentence each, before sacred starts a run."""
    if "with" not in argv:
        return
    try:
        values = check_words(ex, argv[argv.index("with") + 1 :])
    except ValueError as e:
        _exit(str(e))
    if distributed.env_rank() != 0 or "resume" in values:  # the folders are rank 0's business
        return
    results = Path(values.get("results_dir", "results").strip("'\""))
    try:
        results.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=results).close()
    except OSError as e:
        _exit(
            f"cannot write run records to {results} ({e.strerror}); pass "
            "results_dir=<a writable folder>."
        )


def resolve_config(ex: Experiment, words: list[str]) -> dict[str, Any]:
    """The whole config that `experiments/<dataset>.py with <words>` would run with, every
    setting checked; a ValueError (one sentence) for a bad word or setting. Runs nothing."""
    check_words(ex, words)
    updates, named = get_config_updates(words)
    if "config_only" not in ex.commands:

        @ex.command(unobserved=True)
        def config_only(_config):
            return dict(_config)

    try:
        config = ex.run(
            "config_only",
            config_updates=updates,
            named_configs=named,
            options={"--loglevel": "ERROR"},
        ).result
    except Exception as e:  # sacred's own errors
        raise ValueError(f"{' '.join(words)!r} is not a valid configuration ({e}).") from None
    ProtocolConfig.from_dict(config)  # a ConfigError (a ValueError) names the bad setting
    return config


def resolve_many(ex: Experiment) -> None:
    """`--resolve`: a JSON list of word lists on stdin -> a JSON list on stdout, one
    `{"config": ...}` or `{"error": sentence}` per list (`gksparse.sweep` asks this)."""
    out = []
    for words in json.load(sys.stdin):
        try:
            out.append({"config": resolve_config(ex, words)})
        except ValueError as e:
            out.append({"error": str(e)})
    print(json.dumps(out, default=str))


def _stop_on_sigterm() -> None:
    """SIGTERM (what Slurm, most schedulers and `gksparse.sweep` send to stop a job) stops
    the run as Ctrl-C does: recorded INTERRUPTED, resumable. Once: a second one is ignored
    while the run winds down."""

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main(ex: GkExperiment) -> None:
    """The scripts' entry point: check the command line, then let sacred run; Ctrl-C (or
    SIGTERM) ends with one line saying where the run is and how to resume it. `--resolve`
    answers `resolve_many` instead of running."""
    if sys.argv[1:2] == ["--resolve"]:
        ex.observers.clear()
        resolve_many(ex)
        return
    check_command_line(ex, sys.argv)
    _stop_on_sigterm()
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
