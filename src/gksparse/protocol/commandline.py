"""The command line of an experiment: `main` (what `python -m gksparse.run` and the scripts
in experiments/ call), its checks of the words after `with`, and `resolve`, the whole config
a command line would run with (the sweep and `gksparse.probe --pixels` ask it)."""

from __future__ import annotations

import functools
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from sacred import Experiment
from sacred.arg_parser import get_config_updates

from ..model.methods import METHODS
from ..training import distributed
from .config import ProtocolConfig
from .experiment import BASE, MODULE_COMMAND, GkExperiment, _exit, _resume_hint, make_experiment
from .presets import preset


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
    """The whole config that `python -m gksparse.run <dataset> with <words>` would run with, every
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


@functools.cache
def _resolver(dataset: str) -> GkExperiment:
    ex = make_experiment(dataset, main={})
    ex.observers.clear()
    return ex


def resolve(dataset: str, word_lists: list[list[str]]) -> list[dict[str, Any]]:
    """For each list of words after `with`, `{"config": <the whole config>}` or
    `{"error": <one sentence>}`, as `python -m gksparse.run <dataset> with <words>` would
    run; in this process, running and writing nothing. A ValueError for an unknown dataset."""
    preset(dataset)  # a ValueError naming the datasets
    ex = _resolver(dataset)
    out: list[dict[str, Any]] = []
    for words in word_lists:
        try:
            out.append({"config": resolve_config(ex, list(words))})
        except ValueError as e:
            out.append({"error": str(e)})
    return out


def _stop_on_sigterm() -> None:
    """SIGTERM (what Slurm, most schedulers and `gksparse.sweep` send to stop a job) stops
    the run as Ctrl-C does: recorded INTERRUPTED, resumable. Once: a second one is ignored
    while the run winds down."""

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main(dataset: str, argv: list[str] | None = None, command: str = MODULE_COMMAND) -> None:
    """Run `dataset`'s experiment with the command line `argv` (default `sys.argv`: the
    program, then sacred's words, e.g. `with groupwtacnn small seed=1`): check it, then let
    sacred run; Ctrl-C (or SIGTERM) ends with one line saying where the run is and how to
    resume it. `command`: how `python` runs it (the resume hints), `{dataset}` filled in."""
    argv = list(sys.argv if argv is None else argv)
    try:
        ex = make_experiment(dataset, command)
    except ValueError as e:
        _exit(str(e))
    check_command_line(ex, argv)
    _stop_on_sigterm()
    try:
        ex.run_commandline(argv)
    except KeyboardInterrupt:
        folder = getattr(ex, "interrupted_in", None) or (ex.records and ex.records.dir)
        if distributed.env_rank() == 0:
            if folder:
                hint = _resume_hint(ex, folder)
                print(f"\ninterrupted: the run is in {folder}; resume it with: {hint}")
            else:
                print("\ninterrupted before the run started.")
        raise SystemExit(130) from None
