"""The layout rules: the layers hold, no import cycle, no private name imported across
modules, small modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sbi_rounds", "flows", "tasks")
FILES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
MODULES = {
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in FILES
}


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (entry-point glue) or ``if TYPE_CHECKING:`` (types)."""
    if not isinstance(node, ast.If):
        return False
    test = ast.unparse(node.test)
    return "__main__" in test or test == "TYPE_CHECKING"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import (in functions too; not for ``__main__`` or types)."""
    tree = ast.parse(path.read_text())
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.stmt) and _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            found.append((base, [a.name for a in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, names in _imports(path):
            for sub in names:
                if f"{target}.{sub}" in MODULES:
                    graph[name].add(f"{target}.{sub}")
            if target in MODULES:
                graph[name].add(target)
        graph[name].discard(name)
    return graph


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package re-exporting its own modules
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_name_is_imported_from_another_module():
    bad = [
        f"{path.relative_to(ROOT)}: from {target} import {name}"
        for path in FILES
        for target, names in _imports(path)
        if target.split(".")[0] in PACKAGES
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert bad == []


def test_modules_are_small_and_say_what_they_are():
    for path in FILES:
        text = path.read_text()
        tree = ast.parse(text)
        name = path.relative_to(ROOT)
        assert len(text.splitlines()) <= 420, f"{name} has {len(text.splitlines())} lines"
        doc = ast.get_docstring(tree)
        assert doc, f"{name} has no module docstring"
        if path.name not in ("__main__.py",) and path.parent.name != "examples_command":
            assert "__all__" in text, f"{name} has no __all__"


def test_functions_are_short():
    long = []
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {length}")
    assert long == []


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_layer_contracts_hold():
    """import-linter's contracts (pyproject.toml): command line > flows > tasks > library,
    and the library never imports Prefect, also inside a function."""
    out = _python(
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(no_cache=True, no_logo=True))"
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "BROKEN" not in out.stdout and "0 broken" in out.stdout


CORE_WITHOUT_PREFECT = """
import importlib, pkgutil, sys
for name in ("prefect", "flows", "tasks"):
    sys.modules[name] = None  # any import of them raises ImportError
import sbi_rounds
names = [m.name for m in pkgutil.walk_packages(sbi_rounds.__path__, "sbi_rounds.")]
for name in names:
    if not name.endswith(".__main__"):
        importlib.import_module(name)
import sbi_rounds.lifecycle, sbi_rounds.report, sbi_rounds.runtime
print(len(names))
"""


def test_every_library_module_imports_without_prefect_flows_or_tasks():
    out = _python(CORE_WITHOUT_PREFECT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 80  # every module was found, not a few


USER_CODE = (
    "from flows.cli.sys_path import working_directory_last; working_directory_last(); "
    "import flows.online, tasks, mysim; print(tasks.__file__, mysim.__file__)"
)


@pytest.mark.parametrize(
    "start",
    [["-P"], []],
    ids=["installed command (no working directory on the path)", "python -m (it first)"],
)
def test_a_user_directory_with_tasks_and_flows_does_not_shadow_ours(tmp_path, start):
    """The command line puts the working directory last on sys.path: the user's simulator
    imports from it, their ``tasks.py`` (and ``flows/``) do not stand in for ours."""
    (tmp_path / "tasks.py").write_text("raise ImportError('the project tasks.py')\n")
    (tmp_path / "mysim.py").write_text("def simulate(theta):\n    return theta\n")
    if start:  # python -m flows.online itself would find a flows/ here: only the command can
        (tmp_path / "flows").mkdir()
        (tmp_path / "flows" / "__init__.py").write_text("raise ImportError('the project')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, *start, "-c", USER_CODE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ours, theirs = out.stdout.split()
    assert Path(ours).is_relative_to(ROOT / "tasks") and Path(theirs) == tmp_path / "mysim.py"
