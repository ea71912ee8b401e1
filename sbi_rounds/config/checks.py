"""Checks of the trained network and the posterior: stalled trainings, posterior checks."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from sbi_rounds.strict import STRICT

__all__ = ["AUTO_CALIBRATION_SIMULATIONS", "DiagnosticsConfig", "StallConfig"]


class StallConfig(BaseModel):
    """Catching a network that failed to train, and training it again.

    After each round's training, the network's per-sample validation losses are compared
    with a reference on the same rows (see ``sbi_rounds.stages.stall``): in round 1 the best
    linear-Gaussian conditional density (or, for SNRE, a classifier at chance level), later
    the previous round's network. A training whose mean excess loss is above ``margin`` nats
    per modelled dimension and ``significance`` standard errors has stalled: the round is
    trained again from fresh weights with a new seed, before it proposes anything, and the
    run file and the round table record it.
    """

    model_config = STRICT

    max_retrains: int = Field(
        2,
        ge=0,
        le=10,
        title="Retrains of a stalled training",
        description="At most this many new trainings of a round whose training stalled (the "
        "best of all is kept, with a warning, when every one stalls); 0: never retrain.",
    )
    margin: float = Field(
        0.5,
        gt=0,
        title="Excess loss of a stalled training (nats per dimension)",
        description="Mean validation loss above the reference's, per sample and per dimension "
        "of what the network models (theta for snpe/tsnpe, x for snle, 1 for snre), beyond "
        "which a training counts as stalled.",
    )
    significance: float = Field(
        3.0,
        ge=0,
        title="Significance of the excess (standard errors)",
        description="The excess must also exceed this many standard errors of the paired "
        "per-sample differences (small validation sets are noisy).",
    )


#: The largest count each ``int | "auto"`` setting takes.
_AUTO_COUNT_MAX = {"calibration_simulations": 1_000_000, "map_iterations": 100_000}

#: ``calibration_simulations="auto"`` where the posterior is sampled directly.
AUTO_CALIBRATION_SIMULATIONS = 100


class DiagnosticsConfig(BaseModel):
    """Posterior checks after every round, calibration, and the rule that may end a run early.

    None of these settings changes what a run computes (they are not identity settings):
    they can change between sessions, and a round's checks that were never computed (e.g.
    a reference added later) are filled in when the run is resumed.
    """

    model_config = STRICT

    predictive_simulations: int = Field(
        100,
        ge=0,
        le=10_000_000,
        title="Posterior predictive simulations",
        description="Per round, simulate this many of the round's posterior samples at x_o "
        "(on Dask, like the round's own simulations) and compare each summary statistic with "
        "x_o; at most posterior.num_samples; 0: no predictive check.",
    )
    predictive_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        title="Predictive check level",
        description="A summary statistic is flagged when x_o lies outside the central "
        "1 - alpha interval of its posterior predictive distribution (two-sided predictive "
        "p-value 2 min(q, 1 - q) < alpha, q the predictive quantile of x_o).",
    )
    map_iterations: int | Literal["auto"] = Field(
        "auto",
        title="MAP gradient steps",
        description="At most this many gradient-ascent steps of sbi's posterior.map(), "
        "started from the best of the round's stored posterior samples, in stretches of 25 "
        "that end once one raises the log density by less than 0.001 (often 50 steps); 0: no "
        "MAP estimate; auto: 200, or 20 for tfmpe and tnpse (each of their steps "
        "differentiates through an ODE solve; 20 steps reach the density 200 do).",
    )
    calibration_simulations: int | Literal["auto"] = Field(
        "auto",
        title="Calibration test simulations",
        description="Prior draws simulated (on Dask) to check round 1's amortized estimator: "
        "simulation-based calibration ranks and expected coverage (sbi.diagnostics). Some "
        "hundreds give a meaningful check; 0: no calibration; auto: "
        f"{AUTO_CALIBRATION_SIMULATIONS} where the posterior is sampled directly (SNPE, "
        "TSNPE: a few seconds), 0 where each test needs MCMC (SNLE, SNRE).",
    )
    calibration_posterior_samples: int = Field(
        500,
        ge=10,
        le=1_000_000,
        title="Posterior samples per calibration test",
        description="Posterior samples drawn per test simulation to rank its parameters.",
    )
    calibration_classifiers: bool = Field(
        False,
        title="Classifier tests of calibration",
        description="Also run the classifier tests of sbi's check_sbc: C2ST of each "
        "parameter's ranks against uniform ones and of data-averaged posterior samples "
        "against the prior (cross-validated random forests, about 2 s per parameter and test "
        "on 2 cores). Off: the rank KS tests, expected coverage and TARP, which the "
        "calibration alert reads, cost a second or two.",
    )
    reference: str | None = Field(
        None,
        title="Reference posterior samples",
        description="A file of reference posterior samples at x_o, shape (S, D): .npy, .csv or "
        "file.h5:dataset. Each round's posterior is compared with them by C2ST, as sbibm "
        "defines it (0.5: indistinguishable, 1: disjoint).",
        examples=["reference_posterior.npy"],
    )
    true_parameters: list[float] | None = Field(
        None,
        title="True parameters",
        description="The parameters x_o was simulated from, when known: marked in the "
        "pairplots and reported next to the posterior summary.",
    )
    stop_when_stable: bool = Field(
        False,
        title="Stop when the posterior is stable",
        description="End the run before its last round once stable_rounds successive rounds "
        "moved every posterior mean by less than stable_mean_shift standard deviations and "
        "changed every posterior width by less than stable_width_change (relative).",
    )
    stable_mean_shift: float = Field(
        0.1,
        gt=0,
        title="Largest mean shift of a stable round (in sd)",
        description="|mean_r - mean_(r-1)| / sd_(r-1) of every parameter must stay below it. "
        "Keep it above the Monte Carlo noise, about 3 * sqrt(2 / posterior.num_samples).",
    )
    stable_width_change: float = Field(
        0.1,
        gt=0,
        title="Largest width change of a stable round",
        description="|sd_r / sd_(r-1) - 1| of every parameter must stay below it.",
    )
    stable_rounds: int = Field(
        2,
        ge=1,
        le=1000,
        title="Stable rounds in a row before stopping",
        description="How many successive rounds must be stable before the run stops.",
    )

    @field_validator("calibration_simulations", "map_iterations")
    @classmethod
    def _auto_or_count(cls, value: int | str, info: ValidationInfo) -> int | str:
        top = _AUTO_COUNT_MAX[info.field_name]
        if isinstance(value, int) and not 0 <= value <= top:
            raise ValueError(f"must be auto or an integer from 0 to {top}, got {value}")
        return value

    @field_validator("true_parameters")
    @classmethod
    def _finite_truth(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or not all(math.isfinite(v) for v in value)):
            raise ValueError(
                f"true_parameters must be one finite number per parameter, got {value}"
            )
        return value
