"""Every command of the README and of the docs pages (`docs/*.md`, in the README's order), as
a new user pastes it: each ```bash block runs as a bash script, in order, in a checkout laid
out as a fresh clone beside `../shared`.

What cannot run here is named, not silently dropped: the install lines (the test runs in the
installed environment), `python -m pytest` (this is it) and the torchrun commands for GPUs
or several machines. The paper-sized experiment and benchmark commands run with `smoke` (a
resume keeps its run's config), so the test takes minutes, not days; the sweeps, grids of
such runs, with `--dry-run` (every cell's settings checked, nothing run: `tests/sweep` runs
sweeps); everything else runs exactly as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GKSPARSE_DATA") or REPO.parent / "shared" / "data").parent
LONG = re.compile(
    r"^(python|torchrun .*?) (experiments/(mnistrotated|cifar10scanned|coil100|necanimal)\.py|"
    r"-m gksparse\.run (mnistrotated|cifar10scanned|coil100|necanimal)|bench/protocol_time\.py)"
)
NOT_HERE = ("--nproc_per_node=4", "--nnodes=2")  # GPUs / several machines

pytestmark = pytest.mark.slow


def pages() -> list[Path]:
    """The README, then the docs pages in the order its Documentation list gives them."""
    readme = (REPO / "README.md").read_text()
    return [REPO / "README.md", *(REPO / p for p in re.findall(r"\]\((docs/[\w-]+\.md)\)", readme))]


def test_the_docs_list_names_every_page():
    listed = {p.name for p in pages()[1:]}
    assert listed == {p.name for p in (REPO / "docs").glob("*.md")} and len(listed) >= 8


def bash_blocks(text: str) -> list[str]:
    """The ```bash blocks of a Markdown text, continuation lines joined."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return [block.replace("\\\n", " ") for block in blocks]


def as_run_here(block: str) -> tuple[str, list[str]]:
    """The block as this test runs it, and the commands it leaves out (with why)."""
    lines, left_out = [], []
    for line in block.splitlines():
        command = line.split(" #")[0].strip()  # for matching; other lines run unchanged
        if command.startswith("pip install"):
            installs, _, rest = command.partition("&&")
            left_out.append(f"installed already: {installs.strip()}")
            line = command = rest.strip()
        if command == "python -m pytest":
            left_out.append("this test: python -m pytest")
            continue
        if any(flag in command for flag in NOT_HERE):
            left_out.append(f"needs GPUs or machines: {command}")
            continue
        # (a resume keeps its run's own config, smoke-sized here already)
        if LONG.match(command) and " smoke" not in command and " resume=" not in command:
            line = re.sub(r" small\b", "", command) + " smoke"
        if command.startswith("python -m gksparse.sweep"):
            before, with_, after = command.partition(" with ")
            line = f"{before} --dry-run{with_}{after}"
        lines.append(line)
    return "\n".join(lines), left_out


def test_the_readme_blocks_are_runnable_as_written_or_say_why_not():
    blocks = [b for page in pages() for b in bash_blocks(page.read_text())]
    assert len(blocks) >= 6
    left_out = [why for block in blocks for why in as_run_here(block)[1]]
    # exactly what cannot run here; any other command of the README runs below
    assert sorted(w.split(":")[0] for w in left_out) == sorted(
        ["installed already"] * 6 + ["this test"] + ["needs GPUs or machines"] * 2
    ), left_out
    first, _ = as_run_here(blocks[0])
    assert first.splitlines()[0] == (
        "python experiments/mnistrotated.py with groupwtacnn seed=123 data_dir=../shared/data smoke"
    )


def test_every_readme_command_runs_in_a_fresh_checkout(tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    for name in ("experiments", "bench"):
        (main / name).symlink_to(REPO / name)
    (tmp_path / "shared").symlink_to(SHARED)
    bin_dir = str(Path(sys.executable).parent)  # `python` is this environment's
    env = {k: v for k, v in os.environ.items() if not k.startswith("GKSPARSE_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", GKSPARSE_CACHE=str(tmp_path / "cache"))
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    blocks = [(page.name, b) for page in pages() for b in bash_blocks(page.read_text())]
    for i, (page, block) in enumerate(blocks):
        script, _ = as_run_here(block)
        if not script.strip():
            continue
        p = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=main,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert p.returncode == 0, f"{page} block {i}:\n{script}\n{p.stderr[-3000:]}"
        assert "Traceback" not in p.stderr, f"{page} block {i}:\n{p.stderr[-3000:]}"
    assert (main / "results" / "mnistrotated" / "1" / "result.json").is_file()
