"""The floor plan: at most 12 wings and commands at the top of the package, wings imported
only downward in the pipeline's order (TYPE_CHECKING imports included), no import circle,
and the report reads results without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gksparse"
# The pipeline, lowest first: a module may import its own wing and the wings before it.
WINGS = ("data", "ops", "model", "training", "evaluation", "protocol")
COMMANDS = ("run", "sweep", "report", "probe", "features", "cache")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The gksparse modules `path` imports, anywhere in it (functions, TYPE_CHECKING)."""
    here = _module(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else []
            out.update([target, *names] if not node.module else [target])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] == "gksparse"}


def _rank(module: str) -> int:
    """The module's place in the pipeline: a wing's index, the commands above them all."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in WINGS:
        return WINGS.index(parts[1])
    return len(WINGS)


def test_the_package_has_at_most_twelve_entries_the_wings_and_commands():
    entries = {
        p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    entries -= {"__init__", "__main__"}
    assert entries == set(WINGS) | set(COMMANDS)
    assert len(entries) <= 12


def test_wings_import_only_their_own_wing_or_the_wings_before_it():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        me = _module(path)
        for target in _imports(path):
            if (
                target != "gksparse"
                and not target.startswith("gksparse.__")
                and _rank(target) > _rank(me)
            ):
                upward.append(f"{me} imports {target}")
    assert not upward


def test_no_import_circle_between_modules():
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        m: {t if t in modules else t.rsplit(".", 1)[0] for t in _imports(p)} & set(modules) - {m}
        for m, p in modules.items()
    }
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*stack, m, t]
            if t not in state and (circle := visit(t, [*stack, m])):
                return circle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            assert visit(m, []) is None


def test_the_report_reads_results_without_importing_torch():
    code = "import sys, gksparse.report; print(sorted(m for m in sys.modules if m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
