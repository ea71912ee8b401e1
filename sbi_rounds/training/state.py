"""The training loop's state and its result, and the loss and data types it takes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = ["VALIDATION_BATCH", "Data", "LossFn", "TrainingState", "TrainingSummary"]

#: ``loss_fn(model, batch) -> losses``: per-sample losses of shape ``(B,)`` for a batch
#: given as a tuple of tensors that share their first dimension ``B``.
LossFn = Callable[[nn.Module, tuple[Tensor, ...]], Tensor]

Data = Sequence[Tensor] | Iterable[Sequence[Tensor]]


#: Validation rows per forward pass (at least the batch size): fewer, larger passes cost less
#: than training-sized ones, and no gradients are kept.
VALIDATION_BATCH = 1024


@dataclass
class TrainingState:
    """What callbacks read. Only the loop writes it.

    Attributes:
        epoch: Epochs completed (1 after the first epoch).
        step: Optimizer steps taken.
        train_loss: Mean training loss of the last epoch.
        val_loss: Mean validation loss of the last epoch.
        learning_rate: The optimizer's current learning rate.
        epoch_time: Seconds the last epoch took.
        elapsed: Seconds of training so far (resumed trainings include earlier time).
        history: Per-epoch ``train_loss``, ``val_loss``, ``learning_rate``, ``epoch_time``.
        round: The inference round being trained, when a flow set it.
    """

    epoch: int = 0
    step: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    learning_rate: float = 0.0
    epoch_time: float = 0.0
    elapsed: float = 0.0
    history: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in TrainingSummary.HISTORY_KEYS}
    )
    round: int | None = None


@dataclass(frozen=True, kw_only=True)
class TrainingSummary:
    """The outcome of :func:`run_training`."""

    HISTORY_KEYS = ("train_loss", "val_loss", "learning_rate", "epoch_time")

    epochs: int
    steps: int
    best_val_loss: float
    best_epoch: int
    final_train_loss: float
    stop_reason: str
    elapsed: float
    resumed_from_epoch: int
    history: dict[str, list[float]]
    #: The budget that ended the fit (``max_epochs``, ``max_steps``, ``max_time``), or
    #: None when a callback stopped it (early stopping, ...).
    limit_reached: str | None = None
    #: The training batch size used (``batch_size="auto"`` resolved for the data).
    batch_size: int | None = None

    def describe(self) -> str:
        """One line: epochs, steps, the best validation loss and why the training stopped."""
        return (
            f"trained {self.epochs} epochs ({self.steps} steps), best validation loss "
            f"{self.best_val_loss:.4f} at epoch {self.best_epoch}: {self.stop_reason}"
        )
