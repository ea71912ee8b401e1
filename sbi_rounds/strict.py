"""What every settings model shares: strict, frozen pydantic models and import paths."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

__all__ = ["STRICT", "ImportPath"]

#: Unknown keys are errors, instances are frozen, and defaults are validated too.
STRICT = ConfigDict(extra="forbid", frozen=True, validate_default=True)

#: ``module:function``, an importable object.
ImportPath = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", examples=["mypackage.sims:simulate"]),
]
