"""The typed records a round keeps in the run file: one frozen, validated model per kind.

Each record is a JSON string in an attribute of the round's group (the attribute names
below are the file format: unchanged since format 1), written and read by exactly one
method pair of ``RunStore`` (e.g. ``write_diagnostics`` / ``diagnostics``):

========================== ======================= ===================================
attribute                  model                   written by
========================== ======================= ===================================
``seconds_per_simulation`` ``float``               the simulate stage
``training_attempts``      ``list[TrainingAttempt]`` the train stage, one per attempt
``training_summary``       :class:`TrainingSummaryRecord` the train stage, with the network
``posterior_summary``,     :class:`PosteriorSummary` the checkpoint stage
``pairplot``
``diagnostics``            :class:`RoundDiagnostics` the checks (``diagnose``)
``calibration``            :class:`Calibration`    the checks, on round 1
========================== ======================= ===================================

The round's seconds per stage are a dataset, read as :class:`Timings`.

Writing: an unknown field is an error that names it (``extra="forbid"``), and a value of
the wrong type too; the JSON is ``json.dumps(..., sort_keys=True)`` of the model's fields,
as older versions wrote it, so older versions read what this one writes.

Reading: every record an older version wrote is accepted. Fields added since default to
what they meant before (``None``: not recorded; ``fallback=False``: there was no fallback
network). Keys a record has on disk that its model lacks (a field an older version wrote
and this one retired, or one a newer version added) are dropped when read, not an error:
the file stays readable by every version, and a record rewritten (``diagnose`` filling in
a part) leaves them out.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, TypeVar

import h5py
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, model_validator

__all__ = [
    "CALIBRATION",
    "DIAGNOSTICS",
    "PAIRPLOT",
    "POSTERIOR_SUMMARY",
    "SECONDS_PER_SIMULATION",
    "TRAINING_ATTEMPTS",
    "TRAINING_SUMMARY",
    "C2st",
    "Calibration",
    "CheckSeconds",
    "Coverage",
    "JointCheck",
    "Movement",
    "ParameterCalibration",
    "ParameterMovement",
    "ParameterStatistics",
    "ParameterSummary",
    "PosteriorSummary",
    "PredictiveCheck",
    "Record",
    "RoundDiagnostics",
    "StallCheckRecord",
    "StatisticCheck",
    "Timings",
    "TrainingAttempt",
    "TrainingSummaryRecord",
    "read_attr",
    "write_attr",
]

# The attributes of a round's group that hold records (the file format: never rename).
SECONDS_PER_SIMULATION = "seconds_per_simulation"
TRAINING_ATTEMPTS = "training_attempts"
TRAINING_SUMMARY = "training_summary"
POSTERIOR_SUMMARY = "posterior_summary"
PAIRPLOT = "pairplot"
DIAGNOSTICS = "diagnostics"
CALIBRATION = "calibration"

#: The validation context of records read from a file (see the module's docstring).
_READING = {"reading": True}

T = TypeVar("T")


def _absent_when_none(value: Any) -> bool:
    return value is None


def _optional(description: str) -> Any:
    """A field that is None by default and left out of the JSON when None, as older
    versions wrote it (absent, not null)."""
    return Field(default=None, exclude_if=_absent_when_none, description=description)


class Record(BaseModel):
    """Base of the records: frozen, unknown fields refused, except when read from a file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_when_reading(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context is not None and info.context.get("reading"):
            return {k: v for k, v in data.items() if k in cls.model_fields}
        return data


# --- simulations and training ------------------------------------------------------------
class StallCheckRecord(Record):
    """A trained network's validation loss against a reference's (``sbi_rounds.stall``).

    Attributes:
        stalled: Whether the training counts as failed.
        reference: What the loss was compared with: ``gaussian``, ``chance``,
            ``zero_field``, ``previous_round``.
        loss: The network's mean validation loss.
        reference_loss: The reference's mean loss on the same rows.
        excess: ``loss - reference_loss``, nats per sample.
        stderr: Standard error of the paired per-row differences.
    """

    stalled: bool
    reference: str
    loss: float
    reference_loss: float
    excess: float
    stderr: float


class TrainingAttempt(StallCheckRecord):
    """One finished training of a round (there are several when one stalls), with its
    stall check's fields.

    Attributes:
        attempt: 0 for the round's first training, then 1, 2, ...
        seed: The seed the training drew from.
        epochs: Epochs trained.
        stop_reason: Why it stopped, in words.
        capped: Whether a budget (``max_epochs``, ``max_steps``, ``max_time``) stopped it.
        network: The network's model (``maf``, ...); None: not recorded (older runs).
        fallback: Whether it trained the method's fallback network.
        kept: Whether its network is the round's (the last kept attempt's is).
    """

    attempt: int
    seed: int
    epochs: int
    stop_reason: str
    capped: bool
    network: str | None = _optional("The network's model; None: not recorded.")
    fallback: bool = False
    kept: bool = False


class TrainingSummaryRecord(Record):
    """The training of a round's kept network, stored with it.

    Attributes:
        epochs: Epochs trained.
        steps: Optimizer steps taken.
        best_val_loss: The lowest validation loss (the network kept has it).
        best_epoch: The epoch that reached it.
        stop_reason: Why the training stopped, in words.
        elapsed: Seconds the training took.
        resumed_from_epoch: The epoch a checkpoint resumed it from (0: started afresh).
        training_samples: Valid simulations of every round so far it trained on.
        limit_reached: The budget that stopped it (``max_epochs``, ``max_steps``,
            ``max_time``), or None: a callback (early stopping) stopped it.
        batch_size: The training batch size (None: not recorded, older runs).
        attempt: Which of the round's attempts it is (:class:`TrainingAttempt`).
        stall_check: Its stall check (None: not recorded, older runs).
    """

    epochs: int
    steps: int
    best_val_loss: float
    best_epoch: int
    stop_reason: str
    elapsed: float
    resumed_from_epoch: int
    training_samples: int
    limit_reached: str | None = None
    batch_size: int | None = None
    attempt: int = 0
    stall_check: StallCheckRecord | None = _optional("Its stall check; None: not recorded.")


# --- the posterior at x_o ----------------------------------------------------------------
class ParameterSummary(Record):
    """One parameter's posterior at x_o, as the checkpoint stage summarizes it.

    Attributes:
        mean: Posterior mean.
        std: Posterior standard deviation.
        q05: 5% quantile.
        median: Median.
        q95: 95% quantile.
    """

    mean: float
    std: float
    q05: float
    median: float
    q95: float


class PosteriorSummary(Record):
    """What the checkpoint stage records of a round's posterior samples at x_o.

    Stored as two attributes: ``posterior_summary`` (the ``parameters`` mapping) and
    ``pairplot``.

    Attributes:
        parameters: The summary per parameter name, in the prior's order.
        pairplot: The pairplot's file name in the run directory (None: not drawn).
    """

    parameters: dict[str, ParameterSummary]
    pairplot: str | None = None


class ParameterStatistics(Record):
    """One parameter's posterior at x_o, as the checks summarize it
    (``diagnostics.checks.posterior_statistics``); None: not finite.

    Attributes:
        mean: Posterior mean.
        std: Posterior standard deviation.
        q05, q25, median, q75, q95: Quantiles (``diagnostics.checks.QUANTILES``).
        map: The MAP estimate's coordinate (None: not computed).
        truth: The true value, when ``diagnostics.true_parameters`` is set.
        truth_quantile: Its marginal quantile under the posterior.
    """

    mean: float | None
    std: float | None
    q05: float | None
    q25: float | None
    median: float | None
    q75: float | None
    q95: float | None
    map: float | None = None
    truth: float | None = _optional("The true value; absent without true parameters.")
    truth_quantile: float | None = _optional("The truth's posterior quantile.")


class StatisticCheck(Record):
    """Where x_o falls in the predictive distribution of one summary statistic
    (``diagnostics.checks.predictive_check``).

    Attributes:
        xobs: The observed value.
        mean, std, q05, q95: Of the valid predictive simulations (None: not finite).
        quantile: The predictive quantile of x_o (mid-rank for ties).
        p_value: Two-sided, ``2 min(q, 1 - q)``.
        z: ``(x_o - mean) / std`` (None: not finite).
        flagged: ``p_value < alpha``.
    """

    xobs: float
    mean: float | None
    std: float | None
    q05: float | None
    q95: float | None
    quantile: float
    p_value: float
    z: float | None
    flagged: bool


class JointCheck(Record):
    """The joint predictive check: x_o's Mahalanobis distance against the simulations'.

    Attributes:
        distance: x_o's distance from the predictive mean (None: not finite).
        p_value: Monte Carlo p-value of that distance.
        flagged: ``p_value < alpha``.
    """

    distance: float | None
    p_value: float
    flagged: bool


class PredictiveCheck(Record):
    """The posterior predictive check of a round.

    Attributes:
        simulations: Predictive simulations run.
        valid: Those with finite output.
        alpha: The flagging level.
        statistics: The check per summary statistic (empty: fewer than 2 valid).
        flagged: The statistics flagged (every one when fewer than 2 were valid).
        joint: The joint check (None: fewer than 2 valid).
        figure: The figure's file name in the run directory.
        simulated_now: Simulations the check ran (0: all read back from an earlier try).
    """

    simulations: int
    valid: int
    alpha: float
    statistics: dict[str, StatisticCheck]
    flagged: list[str]
    joint: JointCheck | None
    figure: str | None = _optional("The figure's file name.")
    simulated_now: int | None = _optional("Simulations the check ran itself.")


class ParameterMovement(Record):
    """How one parameter's posterior moved from the round before (None: not finite, or
    the parameter is new).

    Attributes:
        mean_shift: ``(mean_r - mean_(r-1)) / sd_(r-1)``.
        width_ratio: ``sd_r / sd_(r-1)``.
    """

    mean_shift: float | None
    width_ratio: float | None


class Movement(Record):
    """How the posterior moved from the round before (``diagnostics.checks.movement``).

    Attributes:
        parameters: The movement per parameter.
        max_mean_shift: The largest ``|mean_shift|`` (None: not finite or no parameter).
        max_width_change: The largest ``|width_ratio - 1|``.
    """

    parameters: dict[str, ParameterMovement]
    max_mean_shift: float | None
    max_width_change: float | None


class C2st(Record):
    """C2ST accuracy of the posterior samples against the reference samples.

    Attributes:
        accuracy: Cross-validated classifier accuracy (0.5: indistinguishable).
        samples: Samples per set it used.
        reference: The reference samples' file (``diagnostics.reference``).
    """

    accuracy: float
    samples: int
    reference: str | None = None


class CheckSeconds(Record):
    """Seconds each check took when it was computed (None: not computed, or in an earlier
    version that did not time it). The posterior summary and movement are not timed.

    Attributes:
        map: The MAP estimate.
        predictive: The predictive check, its simulations included.
        c2st: C2ST.
        calibration: Calibration (round 1), its simulations included.
    """

    map: float | None = _optional("Seconds of the MAP estimate.")
    predictive: float | None = _optional("Seconds of the predictive check.")
    c2st: float | None = _optional("Seconds of C2ST.")
    calibration: float | None = _optional("Seconds of calibration.")

    @property
    def total(self) -> float | None:
        """Seconds of every check computed (None: none)."""
        times = [self.map, self.predictive, self.c2st, self.calibration]
        known = [t for t in times if t is not None]
        return sum(known) if known else None


class RoundDiagnostics(Record):
    """The checks of a finished round (``diagnostics.stage.diagnose``); a part is None
    until computed (a check switched off, or a reference not given yet).

    Attributes:
        posterior: The posterior summary at x_o per parameter, with the MAP estimate.
        map: The MAP estimate, one value per parameter.
        predictive: The posterior predictive check.
        movement: The movement from the previous round (rounds after the first).
        c2st: C2ST against the reference samples.
        seconds: Seconds each check took.
    """

    posterior: dict[str, ParameterStatistics] | None = _optional("The posterior summary.")
    map: list[float] | None = _optional("The MAP estimate.")
    predictive: PredictiveCheck | None = _optional("The posterior predictive check.")
    movement: Movement | None = _optional("The movement from the previous round.")
    c2st: C2st | None = _optional("C2ST against the reference samples.")
    seconds: CheckSeconds = Field(default_factory=CheckSeconds)


# --- calibration -------------------------------------------------------------------------
class ParameterCalibration(Record):
    """Simulation-based calibration of one parameter (``diagnostics.calibration``).

    Attributes:
        ks_p_value: KS test p-value of the ranks against uniform.
        c2st_ranks: C2ST accuracy of the ranks against uniform ones.
        c2st_dap: C2ST accuracy of data-averaged posterior samples against the prior.
        rank_histogram: Counts of the ranks in ``Calibration.rank_bins``.
    """

    ks_p_value: float
    c2st_ranks: float
    c2st_dap: float
    rank_histogram: list[int]


class Coverage(Record):
    """Expected coverage of the posterior's highest-density regions.

    Attributes:
        levels: Credibility levels.
        values: The fraction of tests whose true parameters lie inside, per level.
        ks_p_value: KS test p-value of the density ranks against uniform.
    """

    levels: list[float]
    values: list[float]
    ks_p_value: float


class Calibration(Record):
    """Calibration of round 1's amortized estimator over prior draws (stored on round 1).

    Attributes:
        test_simulations: Test simulations run.
        valid: Those with finite output, used.
        posterior_samples: Posterior samples drawn per test.
        parameters: SBC per parameter name.
        rank_bins: The rank histograms' bin edges.
        coverage: Expected coverage.
        warnings: First lines of the warnings sbi raised.
        figures: Figure file names in the run directory (``ranks``, ``coverage``).
        estimator: Which estimator was checked, in words.
        note: Why calibration checks round 1 only.
    """

    test_simulations: int
    valid: int
    posterior_samples: int
    parameters: dict[str, ParameterCalibration]
    rank_bins: list[float]
    coverage: Coverage
    warnings: list[str] = Field(default_factory=list)
    figures: dict[str, str] = Field(default_factory=dict)
    estimator: str | None = None
    note: str | None = None


# --- seconds per stage -------------------------------------------------------------------
class Timings(Record):
    """Seconds a round spent in each timed stage (``format.TIMED_STAGES``); NaN: the stage
    did not run yet. A stage run again (after a kill) adds its seconds."""

    sample: float
    simulate: float
    append: float
    train: float
    posterior: float
    checkpoint: float
    commit: float

    def by_stage(self) -> dict[str, float]:
        """``{stage: seconds}`` in the order the stages run."""
        return self.model_dump()


# --- encoding ----------------------------------------------------------------------------
@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def write_attr(group: h5py.Group, name: str, kind: type[T] | Any, value: T) -> None:
    """Store ``value`` (validated as ``kind``) as the JSON attribute ``name`` of ``group``.

    Raises:
        pydantic.ValidationError: ``value`` is not a ``kind``: the error names the field.
    """
    adapter = _adapter(kind)
    checked = adapter.validate_python(value)
    group.attrs[name] = json.dumps(adapter.dump_python(checked), sort_keys=True)


def read_attr(group: h5py.Group, name: str, kind: type[T] | Any) -> T | None:
    """The JSON attribute ``name`` of ``group`` read as ``kind``; None when it is absent or
    null (a null ``pairplot``: none drawn)."""
    raw = group.attrs.get(name)
    if raw is None:
        return None
    value = json.loads(raw)
    return None if value is None else _adapter(kind).validate_python(value, context=_READING)
