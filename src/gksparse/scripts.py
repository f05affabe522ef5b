"""The experiment scripts (`experiments/<dataset>.py`) seen from the package: where they are,
and the whole config a command line would run with, asked of the script itself.

Tools that run or imitate experiments (`gksparse.sweep`, `gksparse.probe --pixels`) resolve
`with <words>` exactly as the script would, named configs and sacred's rules included, by
running `python experiments/<dataset>.py --resolve` (a JSON list of word lists on stdin, a
JSON list of `{"config": ...}` or `{"error": sentence}` on stdout). Nothing runs or is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ENV = "GKSPARSE_EXPERIMENTS"  # where the scripts are, when not ./experiments


class ScriptError(RuntimeError):
    """The experiment scripts cannot be found or do not answer; one sentence."""


def scripts_dir(where: str | os.PathLike | None = None) -> Path:
    """The folder of the experiment scripts: `where`, else $GKSPARSE_EXPERIMENTS, else
    `./experiments`, else the one beside this package's source tree (an editable install)."""
    candidates = [where, os.environ.get(ENV), "experiments"]
    candidates.append(Path(__file__).resolve().parents[2] / "experiments")
    for c in candidates:
        if c and (Path(c) / "common.py").is_file():
            return Path(c).resolve()
    given = f"{where} has no experiment scripts; " if where else ""
    raise ScriptError(
        f"{given}cannot find the experiment scripts (experiments/common.py): run from the "
        f"repository root or set {ENV}=<the experiments folder>."
    )


def script(dataset: str, where: str | os.PathLike | None = None) -> Path:
    """`experiments/<dataset>.py`; a `ScriptError` when there is none."""
    path = scripts_dir(where) / f"{dataset}.py"
    if not path.is_file():
        raise ScriptError(f"there is no experiment script {path} for dataset {dataset!r}.")
    return path


def resolve(
    dataset: str, word_lists: list[list[str]], where: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """For each list of words after `with`, `{"config": <the whole config>}` or
    `{"error": <one sentence>}`, as `experiments/<dataset>.py with <words>` would run."""
    path = script(dataset, where)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(path), "--resolve"],
        input=json.dumps(word_lists),
        capture_output=True,
        text=True,
        cwd=path.parent,
        env=env,
    )
    try:
        answers = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ScriptError(f"{path} --resolve did not answer ({tail}).") from None
    if not isinstance(answers, list) or len(answers) != len(word_lists):
        raise ScriptError(
            f"{path} --resolve answered {len(answers)} configs, not {len(word_lists)}."
        )
    return answers
