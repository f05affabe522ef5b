"""A wheel runs experiments without the source tree: built, installed into a fresh virtual
environment, and run from an empty folder (`python -m gksparse.run`, `python -m gksparse.sweep`
and the `gksparse` console command)."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = str(Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    """The python of a fresh venv holding the wheel (its dependencies seen from this
    environment's site-packages, where the source tree is only an editable link)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(root / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (root / "dist").glob("gksparse-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # a path line (not a site dir): the editable install's own .pth files are not read
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    return python


def _run(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GKSPARSE_EXPERIMENTS")}
    return subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200
    )


@pytest.mark.slow
def test_the_wheel_runs_an_experiment_and_a_sweep_from_an_empty_folder(wheel_python, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run(wheel_python, ["-c", "import gksparse; print(gksparse.__file__)"], empty)
    assert where.returncode == 0, where.stderr
    assert str(REPO) not in where.stdout and "site-packages" in where.stdout

    run = _run(
        wheel_python,
        [
            "-m",
            "gksparse.run",
            "mnistrotated",
            "with",
            "groupwtacnn",
            "smoke",
            "seed=1",
            f"data_dir={DATA}",
            f"results_dir={tmp_path / 'runs'}",
            "progress=False",
        ],
        empty,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert '"COMPLETED"' in (tmp_path / "runs" / "mnistrotated" / "1" / "run.json").read_text()

    sweep = _run(
        wheel_python,
        [
            "-m",
            "gksparse.sweep",
            "mnistrotated",
            "--methods",
            "randominitcnn",
            "--workers",
            "1",
            "--results",
            str(tmp_path / "grid"),
            "with",
            "smoke",
            f"data_dir={DATA}",
        ],
        empty,
    )
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    assert "mnistrotated randominitcnn seed=1: COMPLETED" in sweep.stdout

    console = Path(wheel_python).parent / "gksparse"
    report = subprocess.run(
        [str(console), "report", str(tmp_path / "grid")],
        cwd=empty,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    assert "randominitcnn" in report.stdout
    assert not list(empty.iterdir())  # nothing written where it ran
