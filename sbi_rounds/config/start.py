"""``StartConfig``: simulations a run starts from instead of simulating its first round."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sbi_rounds.strict import STRICT

__all__ = ["StartConfig", "check_start"]


class StartConfig(BaseModel):
    """Parameter/simulation pairs you have, taken as the run's first round.

    Example:
        ``StartConfig(simulations="bank.npz", drawn_from="prior")``: the arrays ``theta``
        ``(N, D)`` and ``x`` ``(N, K)`` of ``bank.npz`` are round 1, nothing simulated.
    """

    model_config = STRICT

    simulations: str = Field(
        ...,
        min_length=1,
        title="Simulations file",
        description="A .npz, an .h5 file with the datasets named below, or another run's "
        "run.h5 (its round `round`; where they were drawn from is read from that file).",
        examples=["bank.npz"],
    )
    theta: str = Field(
        "theta", min_length=1, title="Parameters' name", description="Array or dataset (N, D)."
    )
    x: str = Field(
        "x", min_length=1, title="Simulations' name", description="Array or dataset (N, K)."
    )
    round: int = Field(1, ge=1, title="Round", description="The round of another run's file.")
    drawn_from: Literal["prior", "other", "file"] = Field(
        "file",
        title="Drawn from",
        description="prior: the run's prior (the parameters must lie in its support); other: "
        "any other proposal (only for methods whose loss holds for any proposal: snle, "
        "snre); file: as another run's file records it (its round's stored proposal).",
    )


def check_start(start: StartConfig, method: str, any_proposal: bool) -> None:
    """Refuse a declared origin that ``method``'s first-round loss cannot use.

    Raises:
        ValueError: ``drawn_from: other`` for a method that trains round 1 on prior draws.
    """
    if start.drawn_from == "other" and not any_proposal:
        raise ValueError(
            f"start_from.drawn_from=other: {method} trains its first round with a loss that "
            "is correct only for parameters drawn from the prior; import prior draws "
            "(drawn_from: prior), or use snle or snre, whose losses hold for any proposal"
        )
