"""What a round's stages record: its trainings, its posterior summary, its seconds per stage."""

from __future__ import annotations

import math

from pydantic import Field

from sbi_rounds.store.schema.base import Record, optional_field

__all__ = [
    "ParameterSummary",
    "PosteriorSummary",
    "PriorMass",
    "RoundCounts",
    "StallCheckRecord",
    "Timings",
    "TrainingAttempt",
    "TrainingSummaryRecord",
]


class StallCheckRecord(Record):
    """A trained network's validation loss against a reference's (``sbi_rounds.stages.stall``).

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
        fresh: Whether it started from freshly initialised weights (False: from the
            previous round's network); None: not recorded (older runs).
        kept: Whether its network is the round's (the last kept attempt's is).
    """

    attempt: int
    seed: int
    epochs: int
    stop_reason: str
    capped: bool
    network: str | None = optional_field("The network's model; None: not recorded.")
    fallback: bool = False
    fresh: bool | None = optional_field(
        "Whether it started from fresh weights (False: the previous round's); None: not recorded."
    )
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
    stall_check: StallCheckRecord | None = optional_field("Its stall check; None: not recorded.")


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


class PriorMass(Record):
    """How much of a posterior estimate's mass at x_o lies inside the prior's support, as
    the posterior stage measured it before drawing (methods whose sampler rejects draws
    outside the prior: the acceptance rate of that rejection).

    Attributes:
        fraction: The fraction of the estimator's draws inside the support (0 to 1).
        draws: How many draws the fraction was counted on.
        seconds_per_draw: Wall seconds per estimator draw (to predict a sampling's cost).
    """

    fraction: float = Field(ge=0.0, le=1.0)
    draws: int = Field(ge=1)
    seconds_per_draw: float = Field(ge=0.0)

    @property
    def inside(self) -> int:
        """How many of the draws fell inside."""
        return round(self.fraction * self.draws)

    def expected_seconds(self, samples: int) -> float:
        """Predicted wall seconds to draw ``samples`` by rejection (inf: no draw fell
        inside)."""
        if samples <= 0:
            return 0.0
        if self.fraction <= 0.0:
            return math.inf
        return samples / self.fraction * self.seconds_per_draw


class RoundCounts(Record):
    """A round's simulations, once appended for training (every count is -1 before).

    Attributes:
        simulations: Simulations run.
        valid: Those with finite output (used for training).
        invalid: The others.
    """

    simulations: int
    valid: int
    invalid: int

    @property
    def known(self) -> bool:
        """Whether the round's simulations were counted (appended for training)."""
        return self.simulations >= 0


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
