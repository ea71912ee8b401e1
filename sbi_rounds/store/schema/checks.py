"""What a round's checks record (``sbi_rounds.diagnostics``): the posterior summary with the
MAP, the predictive check, the movement, C2ST, their seconds; round 1's calibration."""

from __future__ import annotations

from pydantic import Field

from sbi_rounds.store.schema.base import Record, optional_field

__all__ = [
    "C2st",
    "Calibration",
    "CheckSeconds",
    "Coverage",
    "JointCheck",
    "Movement",
    "ParameterCalibration",
    "ParameterMovement",
    "ParameterStatistics",
    "PredictiveCheck",
    "RoundDiagnostics",
    "StatisticCheck",
    "Tarp",
]


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
    truth: float | None = optional_field("The true value; absent without true parameters.")
    truth_quantile: float | None = optional_field("The truth's posterior quantile.")


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
    figure: str | None = optional_field("The figure's file name.")
    simulated_now: int | None = optional_field("Simulations the check ran itself.")


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

    map: float | None = optional_field("Seconds of the MAP estimate.")
    predictive: float | None = optional_field("Seconds of the predictive check.")
    c2st: float | None = optional_field("Seconds of C2ST.")
    calibration: float | None = optional_field("Seconds of calibration.")

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

    posterior: dict[str, ParameterStatistics] | None = optional_field("The posterior summary.")
    map: list[float] | None = optional_field("The MAP estimate.")
    predictive: PredictiveCheck | None = optional_field("The posterior predictive check.")
    movement: Movement | None = optional_field("The movement from the previous round.")
    c2st: C2st | None = optional_field("C2ST against the reference samples.")
    seconds: CheckSeconds = Field(default_factory=CheckSeconds)


# --- calibration -------------------------------------------------------------------------
class ParameterCalibration(Record):
    """Simulation-based calibration of one parameter (``diagnostics.calibration``).

    Attributes:
        ks_p_value: KS test p-value of the ranks against uniform.
        c2st_ranks: C2ST accuracy of the ranks against uniform ones; None: not run
            (``diagnostics.calibration_classifiers`` off).
        c2st_dap: C2ST accuracy of data-averaged posterior samples against the prior;
            None: not run.
        rank_histogram: Counts of the ranks in ``Calibration.rank_bins``.
    """

    ks_p_value: float
    c2st_ranks: float | None = optional_field("C2ST of the ranks against uniform ones.")
    c2st_dap: float | None = optional_field("C2ST of data-averaged posterior samples.")
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


class Tarp(Record):
    """TARP (Lemos et al. 2023, sbi's ``run_tarp``/``check_tarp``): expected coverage of
    random reference points' balls, a check of the joint posterior beside the ranks.

    Attributes:
        atc: Area between the coverage curve and the diagonal above level 0.5: 0 for a
            calibrated posterior, positive for a too wide one, negative for a too narrow one.
        ks_p_value: KS test p-value of the coverage curve against the diagonal.
    """

    atc: float
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
        tarp: The TARP check; None: not run (runs of earlier versions).
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
    tarp: Tarp | None = optional_field("The TARP check; None: not run.")
    warnings: list[str] = Field(default_factory=list)
    figures: dict[str, str] = Field(default_factory=dict)
    estimator: str | None = None
    note: str | None = None

    @property
    def classified(self) -> bool:
        """Whether sbi's classifier tests ran (``diagnostics.calibration_classifiers``)."""
        return all(p.c2st_ranks is not None for p in self.parameters.values())
