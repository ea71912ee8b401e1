"""Typed, validated configuration of the training runner and of its trackers."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AUTO_BATCH_SIZE",
    "SBI_KEYWORDS",
    "SchedulerConfig",
    "TrackerConfig",
    "TrainConfig",
    "resolve_batch_size",
    "resolve_retrain_from_scratch",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True, validate_default=True)

#: The keyword names sbi's ``train()`` uses, mapped onto :class:`TrainConfig` fields.
#: ``retrain_from_scratch`` keeps its name. Either spelling is accepted; giving both
#: spellings of one setting with different values is an error.
SBI_KEYWORDS: dict[str, str] = {
    "training_batch_size": "batch_size",
    "stop_after_epochs": "patience",
    "max_num_epochs": "max_epochs",
    "clip_max_norm": "clip_grad_norm",
    "show_train_summary": "show_summary",
    "resume_training": "resume",
}


#: ``batch_size="auto"``: at most sbi's training batch size, batches as even as the rows allow.
AUTO_BATCH_SIZE = 200


def resolve_batch_size(batch_size: int | str, num_train: int) -> int:
    """The batch size a fit on ``num_train`` training rows uses.

    ``"auto"``: at most sbi's 200, as even as the rows allow (``ceil(N / ceil(N / 200))``:
    900 rows give 5 batches of 180, 90 rows one of 90), so every row trains every epoch.
    The optimizer steps a small round needs come from the patience's floor in steps
    (``TrainConfig.patience_steps``) rather than from small batches: with 1,000
    simulations of a 2-D linear Gaussian, batches of 50 (the former ``auto``) took 3-4x
    the time per epoch of 200.
    """
    if batch_size != "auto":
        return int(batch_size)
    n = max(1, num_train)
    return math.ceil(n / math.ceil(n / AUTO_BATCH_SIZE))


def resolve_retrain_from_scratch(
    setting: bool | str, num_simulations: int, scratch_from: int | None
) -> bool:
    """Whether a round after the first trains fresh weights instead of continuing.

    Args:
        setting: ``retrain_from_scratch``: True, False or ``"auto"``.
        num_simulations: The valid simulations (every round's) the round trains on.
        scratch_from: ``"auto"``'s threshold: from scratch once the round trains on at
            least this many simulations; None: always continue (the method's
            ``scratch_from_simulations``).
    """
    if setting != "auto":
        return bool(setting)
    return scratch_from is not None and num_simulations >= scratch_from


class SchedulerConfig(BaseModel):
    """A learning-rate schedule, stepped once per epoch (``plateau`` on validation loss).

    Attributes:
        kind: ``cosine`` (to ``min_lr`` over ``t_max`` epochs), ``step`` (multiply by
            ``gamma`` every ``step_size`` epochs), ``exponential`` (multiply by ``gamma``
            every epoch) or ``plateau`` (multiply by ``gamma`` after ``patience`` epochs
            without improvement of the validation loss).
    """

    model_config = _FROZEN

    kind: Literal["cosine", "step", "exponential", "plateau"] = Field(
        "plateau", title="Schedule", description="How the learning rate changes."
    )
    gamma: float = Field(0.5, gt=0, lt=1, description="Decay factor (step, exponential, plateau).")
    step_size: int = Field(10, ge=1, description="Epochs between decays (step).")
    patience: int = Field(5, ge=0, description="Epochs without improvement (plateau).")
    t_max: int = Field(100, ge=1, description="Epochs of a cosine half period (cosine).")
    min_lr: float = Field(0.0, ge=0, description="Lower bound of the rate (cosine, plateau).")


class TrainConfig(BaseModel):
    """Settings of one training run. Frozen and validated on construction.

    The names sbi users know are accepted too (see :data:`SBI_KEYWORDS`):
    ``TrainConfig(training_batch_size=100, learning_rate=1e-3, stop_after_epochs=10)``.

    Attributes:
        batch_size: Training batch size (sbi: ``training_batch_size``), or ``auto``: see
            :func:`resolve_batch_size`.
        learning_rate: Adam's learning rate.
        validation_fraction: Fraction of the data held out for validation, in (0, 1).
        max_epochs: Upper bound on epochs (sbi: ``max_num_epochs``); None: no bound.
        max_steps: Upper bound on optimizer steps; None: no bound.
        max_time: Upper bound on wall time in seconds; None: no bound.
        patience: Epochs without validation improvement before stopping, restoring the
            best weights (sbi: ``stop_after_epochs``); None turns early stopping off.
        patience_steps: ... and at least this many optimizer steps without improvement:
            a floor that gives a small round (one or two batches an epoch) as many updates
            to improve as a round of 1,000 simulations gets from ``patience`` epochs of
            sbi's batches. None: epochs alone.
        min_delta: The decrease of the validation loss that counts as an improvement.
        min_lr: Stop when a scheduler has driven the learning rate below this value.
        divergence_ratio: Stop when validation loss exceeds training loss by this
            factor (on the scale of ``|train loss|``) for ``divergence_checks`` epochs.
        clip_grad_norm: Clip the total gradient norm (sbi: ``clip_max_norm``).
        grad_accumulation: Batches whose gradients are summed before a step.
        scheduler: Learning-rate schedule, or None for a constant rate.
        ema_decay: Keep an exponential moving average of the weights with this decay and
            validate and return the averaged weights; None turns EMA off.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Seed of the data split, batch order and the loss's randomness.
        show_summary: Print a summary line at the end (sbi: ``show_train_summary``).
        resume: Continue from a training checkpoint when one exists (sbi:
            ``resume_training``).
        retrain_from_scratch: Start each round from freshly initialised weights instead
            of the previous round's; ``auto``: as the method declares (TSNPE: from
            scratch once a round trains on 2,000 simulations or more, see
            :func:`resolve_retrain_from_scratch`).
        checkpoint_every: Save a training checkpoint every this many epochs (0: never).
        checkpoint_min_seconds: ... but at most once per this many seconds (0: no limit).
    """

    model_config = _FROZEN

    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        title="Batch size",
        description="A number (sbi: training_batch_size), or auto: at most sbi's 200, in "
        "batches as even as the training rows allow (900 rows: 5 of 180).",
    )
    learning_rate: float = Field(
        5e-4,
        gt=0,
        le=10,
        title="Learning rate",
        description="Adam's learning rate.",
    )
    validation_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        title="Validation fraction",
        description="Fraction of the data held out for validation.",
    )
    max_epochs: int | None = Field(
        None,
        ge=1,
        title="Max epochs",
        description="Upper bound on epochs per round (sbi: max_num_epochs); none: no bound.",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        title="Max optimizer steps",
        description="Upper bound on optimizer steps; none: no bound.",
    )
    max_time: float | None = Field(
        None,
        gt=0,
        title="Max wall time (s)",
        description="Upper bound on wall time in seconds; none: no bound.",
    )
    patience: int | None = Field(
        20,
        ge=1,
        title="Early-stopping patience (epochs)",
        description="Epochs without validation improvement before stopping, restoring the best "
        "weights (sbi: stop_after_epochs); none: no early stopping.",
    )
    patience_steps: int | None = Field(
        100,
        ge=1,
        title="Early-stopping patience (optimizer steps, at least)",
        description="Stop only after at least this many optimizer steps without validation "
        "improvement as well as patience epochs, so that a small round (few batches an "
        "epoch) gets as many updates as a 1000-simulation round; none: epochs alone.",
    )
    min_delta: float = Field(
        0.0,
        ge=0,
        title="Min improvement",
        description="The decrease of the validation loss that counts as an improvement.",
    )
    min_lr: float | None = Field(
        None,
        gt=0,
        title="Stop below this learning rate",
        description="Stop when a scheduler has driven the learning rate below this value.",
    )
    divergence_ratio: float | None = Field(
        None,
        gt=0,
        title="Divergence ratio",
        description="Stop when the validation loss exceeds the training loss by this factor "
        "(on the scale of |train loss|) for divergence_checks epochs.",
    )
    divergence_checks: int = Field(
        5,
        ge=1,
        title="Divergence checks",
        description="Epochs in a row the divergence ratio must be exceeded.",
    )
    clip_grad_norm: float | None = Field(
        5.0,
        gt=0,
        title="Gradient clipping norm",
        description="Clip the total gradient norm (sbi: clip_max_norm); none: no clipping.",
    )
    grad_accumulation: int = Field(
        1,
        ge=1,
        title="Gradient accumulation",
        description="Batches whose gradients are summed before a step.",
    )
    scheduler: SchedulerConfig | None = Field(
        None,
        title="Learning-rate schedule",
        description="Learning-rate schedule; none: a constant rate.",
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        title="EMA decay",
        description="Validate and keep an exponential moving average of the weights with this "
        "decay; none: no EMA.",
    )
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?|mps)$",
        title="Device",
        description="Training device: cpu, cuda, cuda:N or mps.",
    )
    seed: int = Field(
        0,
        ge=0,
        title="Seed",
        description="Seed of the data split, batch order and the loss's randomness (a run derives "
        "it per round from the run seed).",
    )
    show_summary: bool = Field(
        False,
        title="Print a summary",
        description="Print a summary line at the end (sbi: show_train_summary).",
    )
    resume: bool = Field(
        True,
        title="Resume from a training checkpoint",
        description="Continue from a training checkpoint when one exists (sbi: resume_training).",
    )
    retrain_from_scratch: bool | Literal["auto"] = Field(
        "auto",
        title="Retrain from scratch every round",
        description="true: start each round from freshly initialised weights instead of the "
        "previous round's; false: continue the previous round's network (as sbi does); auto: "
        "as the method declares (tsnpe: from scratch once a round trains on 2000 simulations "
        "or more; the other methods continue).",
    )
    checkpoint_every: int = Field(
        10,
        ge=0,
        title="Checkpoint every N epochs",
        description="Save a training checkpoint every this many epochs; 0: never.",
    )
    checkpoint_min_seconds: float = Field(
        10.0,
        ge=0,
        title="Seconds between checkpoints (at least)",
        description="A checkpoint is written every checkpoint_every epochs but at most once "
        "per this many seconds of training, so saving stays a small share of training time "
        "(an interruption loses at most about this much training); 0: every "
        "checkpoint_every epochs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _map_sbi_keywords(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in SBI_KEYWORDS.items():
            if old not in data:
                continue
            value = data.pop(old)
            if new in data and data[new] != value:
                raise ValueError(
                    f"both {old}={value!r} (sbi's name) and {new}={data[new]!r} were given; "
                    f"give one of them, e.g. TrainConfig({new}={value!r})"
                )
            data[new] = value
        return data

    @model_validator(mode="after")
    def _check_bounds(self) -> TrainConfig:
        if self.max_epochs is None and self.max_steps is None and self.max_time is None:
            if self.patience is None and self.min_lr is None:
                raise ValueError(
                    "training would never stop: set max_epochs, max_steps, max_time or "
                    "patience, e.g. TrainConfig(max_epochs=100)"
                )
        return self

    @classmethod
    def from_sbi(cls, **kwargs: Any) -> TrainConfig:
        """Build from sbi-style ``train()`` keywords, mixed freely with our names."""
        return cls(**kwargs)


class TrackerConfig(BaseModel):
    """Where training metrics go: one setting picks the backend.

    Attributes:
        backend: ``log`` (default: DEBUG log records, shown with ``-vv``), ``stdout``,
            ``tensorboard``, ``mlflow``, ``wandb`` or ``none``.
        uri: TensorBoard log directory, MLflow tracking URI, or W&B directory. Relative
            paths are taken under the run's directory when omitted.
        experiment: MLflow experiment or W&B project name.
        wandb_mode: W&B mode; ``offline`` writes locally and needs no account.
    """

    model_config = _FROZEN

    backend: Literal["log", "stdout", "tensorboard", "mlflow", "wandb", "none"] = Field(
        "log",
        title="Logging backend",
        description="Where training metrics go: log (DEBUG records, shown with -vv), stdout, "
        "tensorboard, mlflow, wandb or none.",
    )
    uri: str | None = Field(
        None,
        title="Log directory or tracking URI",
        description="TensorBoard log directory, MLflow tracking URI or W&B directory; none: in "
        "the run's directory.",
    )
    experiment: str = Field(
        "sbi-rounds",
        min_length=1,
        title="Experiment / project",
        description="MLflow experiment or W&B project name.",
    )
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        "offline",
        title="W&B mode",
        description="W&B mode; offline writes locally and needs no account.",
    )
