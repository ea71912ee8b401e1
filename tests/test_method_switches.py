"""Behaviour that differs by method lives on the method classes: no module outside
``sbi_rounds/methods/`` tests a method's name, its network's role or its estimator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sbi_rounds.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent
#: Where a switch on a method is refused: every module of the library but the methods',
#: the orchestration layer and the deployments.
SCANNED = ("sbi_rounds", "flows", "tasks", "deployments")
ALLOWED = ROOT / "sbi_rounds" / "methods"

#: The strings that name a method (a role's names are common words: ``posterior`` is also
#: a stage; they are caught where compared with a ``role``).
NAMES = frozenset(METHODS)
#: Variables, attributes and keys whose value names a method, its network's role or its
#: estimator.
HOLDERS = frozenset({"method", "role", "estimator"})


def _strings(node: ast.AST) -> list[str]:
    """The string constants ``node`` is, or holds as a tuple, list or set literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def _holder(node: ast.AST) -> str | None:
    """The name of ``node`` when it is a variable, attribute or key among :data:`HOLDERS`."""
    if isinstance(node, ast.Name) and node.id in HOLDERS:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in HOLDERS:
        return node.attr
    if isinstance(node, ast.Subscript) and set(_strings(node.slice)) & HOLDERS:
        return ast.unparse(node.slice)
    return None


def switches(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every switch on a method in ``source``: a comparison with a
    method's name, a comparison of ``method``, ``role`` or ``estimator`` (a variable, an
    attribute or a key) with a string, a ``match`` case or a dictionary key naming a
    method."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            strings = [s for o in operands for s in _strings(o)]
            if any(s in NAMES for s in strings) or (strings and any(_holder(o) for o in operands)):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.MatchValue) and set(_strings(node.value)) & NAMES:
            found.append((node.lineno, f"case {ast.unparse(node.value)}"))
        elif isinstance(node, ast.Dict):
            keys = [s for k in node.keys if k is not None for s in _strings(k)]
            if set(keys) & NAMES:
                found.append((node.lineno, ast.unparse(node)[:80]))
    return found


def _modules() -> list[Path]:
    files = [p for top in SCANNED for p in sorted((ROOT / top).rglob("*.py"))]
    return [p for p in files if ALLOWED not in p.parents]


def test_no_module_outside_the_methods_switches_on_a_method():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in _modules()
        for line, text in switches(path.read_text())
    ]
    assert not offenders, (
        "behaviour that differs by method belongs on the method class "
        "(sbi_rounds/methods/base.py and subclasses), not in a switch:\n" + "\n".join(offenders)
    )


@pytest.mark.parametrize(
    "source",
    [
        'if config.method == "snpe": pass',
        'x = 1 if role != "classifier" else 2',
        'ok = method in ("tfmpe", "tnpse")',
        'ok = run.method.estimator == "flow"',
        'if settings["role"] == "vector_field": pass',
        'match method:\n    case "snle": pass',
        'defaults = {"snpe": "nsf", "snle": "maf"}',
    ],
)
def test_the_scan_finds_each_kind_of_switch(source):
    assert switches(source)


def test_the_scan_leaves_other_comparisons_alone():
    assert not switches('if record.name == "py.warnings" and kind == "posterior": pass')
    assert not switches('stages = {"posterior": 4, "train": 3}')
    assert _modules() and all(ALLOWED not in p.parents for p in _modules())
