"""The sacred experiment of a dataset: named configs, records, resume, clean errors.

`python -m gksparse.run <dataset> with ...` and `python experiments/<dataset>.py with ...`
both call `main(dataset)`. The settings come from `gksparse.protocol.presets` (the dataset's
paper sizes, `small`, `smoke`, the methods, the ablations) over the defaults and rules of
`gksparse.protocol.config`; the protocol is `gksparse.protocol.pipeline`, the run folder and
resume planning `gksparse.protocol.rundir`. This module connects them to sacred:
- sacred's records go into the run folder `results/<dataset>/<id>/` (`observer.RunObserver`);
- `with resume=<folder>` continues a run with its saved config; keys given beside it may
  change while the work they decided is not done yet (`rundir.resume.plan_resume`), and
  each change is recorded in `changes.json`;
- a bad setting, a damaged record or a failed stage is one sentence and exit code 2; a
  failed run keeps that sentence in `run.json` and `cout.txt`; Ctrl-C prints where the run
  is and the command that resumes it;
- progress bars only where they fit: sacred's capture puts a pipe between the run and the
  terminal, so whether stderr is a terminal is decided before it starts
  (`$GKSPARSE_PROGRESS`, see `training.progress`); the run writes TensorBoard event files
  into its folder (`gksparse.protocol.tensorboard`) unless `tensorboard=False`;
- `resolve` gives the whole config a command line would run with, in this process (the
  sweep and `gksparse.probe --pixels` ask it), running nothing.

Under torchrun only rank 0 has the observer, checks the results folder and records the run;
it sends its config (seed included) and run folder to the other ranks, which train with it
and write nothing.
"""

from __future__ import annotations

import logging
import os
import sys
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
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402

from .. import __version__  # noqa: E402
from ..data import files  # noqa: E402
from ..model.methods import METHODS  # noqa: E402
from ..training import distributed, runtime  # noqa: E402
from ..training.progress import PROGRESS_ENV  # noqa: E402
from .config import ConfigError, ProtocolConfig, defaults, rules  # noqa: E402
from .observer import RunObserver  # noqa: E402
from .pipeline import run_protocol  # noqa: E402
from .presets import named_configs, preset  # noqa: E402
from .rundir.records import RunFolderError  # noqa: E402
from .rundir.resume import plan_resume  # noqa: E402
from .tables import run_table  # noqa: E402

DERIVED = ("data_options",)  # gathered from other keys (`Preset.folder_options`)
# sacred's config: every ProtocolConfig default (sacred draws the seed), and where runs go
BASE: dict[str, Any] = {
    **{k: v for k, v in defaults().items() if k not in ("seed", *DERIVED)},
    "results_dir": "results",
    "resume": None,
}
MODULE_COMMAND = "-m gksparse.run {dataset}"  # how `python` runs an experiment, any folder
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
  progress=True|False      progress bars always | no training output (default: a line per
                           epoch, bars only on a terminal)
  tensorboard=False        no TensorBoard event files in the run folder
"""


class RunFailed(Exception):
    """A run stopped with an error sentence (already printed); sacred records it as FAILED."""


def _exit(message: str) -> None:
    """One sentence on stderr and exit code 2 (before any run starts)."""
    if distributed.env_rank() == 0:
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# -- resume --------------------------------------------------------------------------------
def resume_config(
    dataset: str, updates: dict[str, Any], named: list[str], command: str = MODULE_COMMAND
) -> dict[str, Any] | None:
    """The config that continues the run folder `updates['resume']`, or None when it is
    finished and nothing changes (then it says so). Refuses (`_exit`) what
    `rundir.plan_resume` refuses, and named configs; records accepted changes."""
    try:
        plan = plan_resume(updates["resume"], dataset, updates, derived=DERIVED, script=command)
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


def _resume_hint(ex: GkExperiment, folder: str) -> str:
    world = distributed.env_world_size()
    launcher = f"torchrun --nproc_per_node={world}" if world > 1 else "python"
    return f"{launcher} {ex.launch.format(dataset=ex.path)} with resume={folder}"


# -- the experiment ------------------------------------------------------------------------
class GkExperiment(Experiment):
    """sacred's Experiment with resume and one-sentence failures (see the module docstring)."""

    records: RunObserver | None = None
    interrupted_in: str | None = None  # the run folder when Ctrl-C stopped a run
    launch: str = MODULE_COMMAND  # what follows `python` to run it ({dataset} filled in)

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
        if main_run:  # sacred's capture hides the terminal from the run: decide here
            os.environ.setdefault(PROGRESS_ENV, "bars" if sys.stderr.isatty() else "lines")
        if main_run and updates.get("resume") and distributed.env_rank() == 0:
            # the other ranks of torchrun get rank 0's merged config in `run`
            merged = resume_config(self.path, updates, list(named_configs), self.launch)
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
    dataset: str, command: str = MODULE_COMMAND, main: dict[str, Any] | None = None
) -> GkExperiment:
    """The sacred experiment of `dataset`: its preset's settings over the defaults, the
    methods, ablations, `small` and `smoke` as named configs.

    command: what follows `python` to run it, `{dataset}` filled in (the resume hints);
    main: the globals of the run's main file (default `__main__`'s), which sacred records
    with its sources.
    """
    p = preset(dataset)
    main = main if main is not None else vars(sys.modules["__main__"])
    ex = GkExperiment(dataset, save_git_info=False, additional_host_info=[_torch_info])
    ex.launch = command
    if main.get("__file__"):
        ex.base_dir = str(Path(main["__file__"]).resolve().parent)
        ex.mainfile, ex.sources, ex.dependencies = gather_sources_and_dependencies(
            main, False, ex.base_dir
        )
    for package in (torch, np, sacred):  # sacred takes no local part ('+cpu')
        ex.add_package_dependency(package.__name__, package.__version__.split("+")[0])
    ex.add_package_dependency("gksparse", __version__)
    methods = textwrap.fill(", ".join(METHODS), 90, subsequent_indent=" " * 13)
    usage = f"python {command.format(dataset=dataset)} with <method> [nospatial|nolifetime] seed=N"
    ex.doc = (main.get("__doc__") or usage).strip() + OPTIONS_HELP.format(methods=methods)
    ex.captured_out_filter = apply_backspaces_and_linefeeds  # progress bars: final frames only
    ex.add_config({**BASE, "dataset": dataset, **p.paper})
    _add_rules_and_checks(ex, p.folder_options)
    for name, cfg in named_configs(dataset).items():
        ex.add_named_config(name, cfg)
    if distributed.env_rank() == 0:  # under torchrun, rank 0 alone records the run
        ex.logger = _logger()
        ex.records = RunObserver()
        ex.observers.append(ex.records)
    else:
        ex.logger = logging.getLogger(f"{dataset}.rank{distributed.env_rank()}")
        ex.logger.setLevel(logging.ERROR)
    ex.main(_main_function(ex))
    return ex


def _add_rules_and_checks(ex: GkExperiment, folder_options: tuple[str, ...]) -> None:
    """The reference's rules per method and dataset (`gksparse.protocol.config.rules`),
    written out so that config.json says what ran (each may be set on the command line),
    `data_options` gathered from the `folder_options` keys, and the check of every setting
    before a run starts."""

    @ex.config
    def derived(method, dataset, classify_dataset, lr):
        clipnorm = rules(method, dataset, classify_dataset)["clipnorm"]  # noqa: F841
        carry_head = rules(method, dataset, classify_dataset)["carry_head"]  # noqa: F841
        # the reference's end-to-end rate, unless set (a bad lr is the check's to refuse)
        finetune_lr = lr / 10 if isinstance(lr, (int, float)) else None  # noqa: F841

    @ex.config_hook
    def check_settings(config, command_name, logger):
        derived = {}
        if folder_options:  # what the folder loader takes besides the protocol's own keys
            derived["data_options"] = {key: config[key] for key in folder_options}
        if command_name == "run":  # not for print_config and the like
            try:
                ProtocolConfig.from_dict({**config, **derived})
            except ConfigError as e:
                _exit(str(e))
        return derived


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
                device = runtime.default_device(cfg.device)
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
        message += f"; to continue once fixed: {_resume_hint(ex, folder)} [key=value]."
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
