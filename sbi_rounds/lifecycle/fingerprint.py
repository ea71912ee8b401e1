"""The code a run depends on: a fingerprint of the simulator and the prior as code.

A run's settings name its simulator and prior (``module:function``, a command); the
fingerprint records what those names pointed to when the run was created, so a resume
with changed code under the same name is caught (see ``sbi_rounds.lifecycle.session``):

* a Python function: SHA-256 of its source, of its module's file, and the installed
  version of the distribution named like its top-level package (if any);
* an external program: SHA-256 of the program file (found on ``PATH``), of every argument
  that is an existing file, and of the module's file for ``python -m module``;
* a box prior: nothing beyond its bounds, which are settings already.

Not detected: changes in code that the function calls in other modules (a library, a
helper module of your own), data files it reads, and the environment (see
``docs/interrupting.md``, "Changed code").
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import shutil
from pathlib import Path
from typing import Any

from sbi_rounds.builders.imports import import_object
from sbi_rounds.config import PriorConfig, SimulatorConfig
from sbi_rounds.errors import CodeChangedError

__all__ = ["check_prior_code", "code_changes", "code_fingerprint", "simulator_unavailable"]

#: The value of an entry that could not be computed (no source, a built-in).
UNAVAILABLE = "unavailable"


def code_fingerprint(simulator: SimulatorConfig, prior: PriorConfig) -> dict[str, dict[str, str]]:
    """``{"simulator": {entry: value}, "prior": {entry: value}}``, JSON-ready.

    Raises:
        ValueError: A Python simulator or prior does not import (see ``import_object``).
    """
    if simulator.kind == "command":
        sim = _command_fingerprint(list(simulator.command or []))
    else:
        sim = _python_fingerprint(str(simulator.path), "simulator")
    pri = {} if prior.path is None else _python_fingerprint(prior.path, "prior")
    return {"simulator": sim, "prior": pri}


def code_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one line per entry (empty: the same code).

    ``prior.function``, ``simulator.package`` and similar name the entry; entries present
    in only one of them count as changed.
    """
    lines = []
    for part in ("simulator", "prior"):
        before, after = old.get(part, {}), new.get(part, {})
        for key in sorted(set(before) | set(after)):
            a, b = before.get(key), after.get(key)
            if a != b:
                lines.append(f"{part}.{key}: {_short(a)} -> {_short(b)}")
    return lines


def _short(value: str | None) -> str:
    if value is None:
        return "(not recorded)"
    if value.startswith("sha256:"):
        return value[:19]  # "sha256:" and 12 hex digits
    return value


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _python_fingerprint(path: str, what: str) -> dict[str, str]:
    """The function's source, its module's file and the distribution providing it."""
    obj = import_object(path, what)
    module_name = path.partition(":")[0]
    entries = {"function": UNAVAILABLE, "module": UNAVAILABLE}
    try:
        source = inspect.getsource(obj)
        entries["function"] = "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    except (OSError, TypeError):
        pass  # defined interactively, a built-in or a C extension: the module file remains
    module_file = getattr(importlib.import_module(module_name), "__file__", None)
    if module_file and Path(module_file).is_file():
        entries["module"] = _sha256_file(Path(module_file))
    package = _distribution(module_name)
    if package is not None:
        entries["package"] = package
    return entries


def _distribution(module_name: str) -> str | None:
    """``name==version`` of the installed distribution named like the module's top-level
    package (``mypackage`` or ``my-package``), if any.

    Looked up by name: ``importlib.metadata.packages_distributions()`` would also find
    distributions named otherwise (scikit-learn for sklearn), but reads every installed
    distribution's metadata, seconds on a large environment. The module's own file is
    hashed in any case.
    """
    top = module_name.split(".")[0]
    for name in dict.fromkeys((top, top.replace("_", "-"))):
        try:
            return f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _command_fingerprint(command: list[str]) -> dict[str, str]:
    """The program file, every argument that is a file, and ``python -m``'s module file."""
    entries: dict[str, str] = {}
    if not command:
        return entries
    program = shutil.which(command[0]) or command[0]
    entries["program"] = (
        _sha256_file(Path(program)) if Path(program).is_file() else f"not found: {command[0]}"
    )
    for i, arg in enumerate(command[1:], start=1):
        if "{" in arg:
            continue  # a placeholder ({input}, {output}, {seed}, {n})
        if arg == "-m" and i + 1 < len(command):
            entries[f"module {command[i + 1]}"] = _module_file_hash(command[i + 1])
        elif Path(arg).is_file():
            entries[f"file {arg}"] = _sha256_file(Path(arg))
    return entries


def _module_file_hash(module_name: str) -> str:
    """SHA-256 of a module's file, found without importing it."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return f"not found: {module_name}"
    return _sha256_file(Path(spec.origin))


def _module_file(module_name: str) -> Path | None:
    """The file of a module, found without importing it or its parent packages (importing
    runs their code)."""
    parts = module_name.split(".")
    try:  # a top-level name: the finders (an editable install's too), nothing imported
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    for i in range(1, len(parts)):
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), locations)
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def check_prior_code(prior: PriorConfig, recorded: dict[str, Any] | None, run: str) -> None:
    """Before a prior factory of a run is called on a reader's explicit request: its code
    must be the code the run recorded (``recorded``, the run's code fingerprint; None: a run
    from before fingerprints, which is not checked). The module's file is compared before
    anything is imported, then the function's source and the package's version.

    Raises:
        CodeChangedError: The code differs from the recorded one (or the run recorded a box
            prior); nothing was imported when the module's file differs.
    """
    if prior.path is None or recorded is None:
        return
    stored = recorded.get("prior") or {}
    refused = f"{run}: the prior {prior.path} is not the code the run recorded, so it is not called"
    if "module" not in stored:
        raise CodeChangedError(f"{refused} (the run recorded no prior factory)")
    module = _module_file(prior.path.partition(":")[0])
    now = _sha256_file(module) if module is not None else f"not found: {prior.path}"
    if stored["module"] != UNAVAILABLE and now != stored["module"]:
        raise CodeChangedError(
            f"{refused} (prior.module: {_short(stored['module'])} -> "
            f"{_short(now)}); nothing was imported"
        )
    changes = code_changes({"prior": stored}, {"prior": _python_fingerprint(prior.path, "prior")})
    if changes:
        raise CodeChangedError(f"{refused} ({'; '.join(changes)})")


def simulator_unavailable(
    simulator: SimulatorConfig, recorded: dict[str, Any] | None
) -> str | None:
    """Why the run's simulator cannot simulate again what it simulated (None: it can, as
    far as can be told without importing or running it): an external program or a module
    no longer there, or code that differs from the fingerprint the run recorded (the
    module's file, the program and its files; compared without importing anything)."""
    stored = (recorded or {}).get("simulator") or {}
    if simulator.kind == "command":
        now = _command_fingerprint(list(simulator.command or []))
        missing = [v for v in now.values() if v.startswith("not found: ")]
        if missing:
            return f"the simulator's {missing[0]} (no longer installed)"
        changes = code_changes({"simulator": stored}, {"simulator": now}) if stored else []
        return f"the simulator changed ({'; '.join(changes)})" if changes else None
    module_name = str(simulator.path).partition(":")[0]
    module = _module_file(module_name)
    if module is None:
        return f"the simulator's module {module_name} is no longer there"
    before = stored.get("module")
    now = _sha256_file(module)
    if before is not None and before != UNAVAILABLE and before != now:
        return f"the simulator changed (simulator.module: {_short(before)} -> {_short(now)})"
    return None
