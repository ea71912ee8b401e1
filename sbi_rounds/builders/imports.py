"""Importing user code (simulators, priors, embedding nets) by ``module:function`` path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["import_object"]


def import_object(path: str, what: str = "object") -> Callable[..., Any]:
    """Import ``module:attribute`` (the attribute may be dotted) and return it.

    Args:
        path: For example ``"sbi_rounds.examples:linear_gaussian"``.
        what: What the object is for, used in error messages ("simulator", "prior").

    Raises:
        ValueError: The path is malformed, the module does not import, or the attribute is
            missing or not callable; the message says which and how to fix it.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} path {path!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module
        raise ValueError(
            f"{what} {path!r}: module {module_name!r} failed to import "
            f"({type(e).__name__}: {e}); check that it is installed or on PYTHONPATH"
        ) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {path!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what} {path!r} is a {type(obj).__name__}, not a callable")
    return obj
