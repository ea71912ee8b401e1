"""Write constraints.txt: the exact version of every package sbi-rounds[dev] installs here.

Run it in the environment CI and the benchmarks use (after ``pip install -e ".[dev]"``):
``python .ci/freeze-constraints.py``. It walks the project's requirements, with their
extras, through the installed distributions' metadata, like ``pip freeze`` restricted to
what the project pulls in.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
#: Local version labels are dropped (torch 2.13.0+cpu is written torch==2.13.0): the pin then
#: accepts this machine's CPU build and a cluster's CUDA build of the same release.
HEADER = """\
# Exact versions that CI (.ci/run) and the benchmarks use, for:
#   pip install -e ".[dev]" -c constraints.txt
# Users of the package get the ranges in pyproject.toml; this file only pins what is tested.
# Regenerate after changing dependencies: python .ci/freeze-constraints.py
"""


#: Left out, as ``pip freeze`` leaves them out: the installer's own tools (the environment's
#: setuptools may be older than what torch declares, and pinning it would block the install).
SKIP = {"pip", "setuptools", "wheel", "distribute"}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Installed versions of ``root[extras]``'s requirements, transitively."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a requirement whose marker excludes this platform, never installed
        if _name(name) != _name(root) and _name(name) not in SKIP:
            pins[_name(dist.metadata["Name"])] = dist.version.split("+")[0]
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(e) for e in envs):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return pins


def main() -> int:
    pins = closure("sbi-rounds", {"dev"})
    text = HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    (ROOT / "constraints.txt").write_text(text)
    print(f"constraints.txt: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
