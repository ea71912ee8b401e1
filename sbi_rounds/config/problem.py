"""The problem's settings: the prior and the simulator."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from sbi_rounds.strict import STRICT, ImportPath

__all__ = ["PriorConfig", "SimulatorConfig"]


class PriorConfig(BaseModel):
    """The prior: box bounds (an independent uniform per parameter) or an import path.

    Give either ``low`` and ``high`` (one value per parameter) or ``path``, a
    ``module:function`` that returns a ``torch.distributions.Distribution`` over ``(D,)``.
    """

    model_config = STRICT

    low: list[float] | None = Field(
        None, title="Lower bounds", description="Box prior lower bounds, one per parameter."
    )
    high: list[float] | None = Field(
        None, title="Upper bounds", description="Box prior upper bounds, one per parameter."
    )
    path: ImportPath | None = Field(
        None,
        title="Prior factory",
        description="module:function returning a torch Distribution over (D,).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PriorConfig:
        box = self.low is not None or self.high is not None
        if box and self.path is not None:
            raise ValueError("give either low/high box bounds or path, not both")
        if not box and self.path is None:
            raise ValueError("give low and high box bounds, or path='module:function'")
        if box:
            if self.low is None or self.high is None:
                raise ValueError("box prior needs both low and high")
            if len(self.low) != len(self.high) or not self.low:
                raise ValueError(
                    f"low and high need one value per parameter and the same length, got "
                    f"{len(self.low)} and {len(self.high)}"
                )
            infinite = [i for i, v in enumerate([*self.low, *self.high]) if not math.isfinite(v)]
            if infinite:
                raise ValueError(
                    "box prior bounds must be finite numbers (a uniform prior over an infinite "
                    f"range has no density): low={self.low}, high={self.high}; for an "
                    "unbounded prior give prior.path, a factory of a torch distribution"
                )
            bad = [
                i for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)) if not hi > lo
            ]
            if bad:
                raise ValueError(
                    "prior width must be positive: high must exceed low for parameter(s) "
                    + ", ".join(f"{i} (low={self.low[i]}, high={self.high[i]})" for i in bad)
                )
        return self


class SimulatorConfig(BaseModel):
    """The simulator and how it is called.

    ``batched``: ``f(theta (N, D)) -> x (N, K)``, numpy or torch. ``per_sample``:
    ``f(theta (D,)) -> x (K,)``, batched for you. ``command``: an external program, see
    ``sbi_rounds.simulation`` for its file protocol.
    """

    model_config = STRICT

    path: ImportPath | None = Field(
        "sbi_rounds.examples:linear_gaussian",
        title="Simulator",
        description="module:function, an importable simulator.",
    )
    kind: Literal["batched", "per_sample", "command"] = Field(
        "batched",
        title="Kind",
        description="batched: f(theta (N, D)) -> x (N, K); per_sample: f((D,)) -> (K,); "
        "command: an external program (see command).",
    )
    command: list[str] | None = Field(
        None, title="Command", description="Program and arguments (kind=command)."
    )
    kwargs: dict[str, float | int | str | bool] = Field(
        default_factory=dict, title="Keyword arguments", description="Passed to the simulator."
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> SimulatorConfig:
        if self.kind == "command":
            if not self.command:
                raise ValueError("kind='command' needs command=['program', 'arg', ...]")
        elif self.path is None:
            raise ValueError(f"kind={self.kind!r} needs path='module:function'")
        return self
