"""The unified training loop: ``run_training`` trains any torch module on any per-sample loss.

The loop itself is ``sbi_rounds.training.loop``, what it is built from
``sbi_rounds.training.setup``, its state and result ``sbi_rounds.training.state``; the names
are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sbi_rounds.training.callbacks import Callback
from sbi_rounds.training.config import TrainConfig, resolve_batch_size
from sbi_rounds.training.loop import TrainingLoop
from sbi_rounds.training.setup import (
    data_rows,
    default_callbacks,
    default_optimizer,
    flatten_parameters,
    make_batches,
    make_scheduler,
    split_train_val,
)
from sbi_rounds.training.state import (
    VALIDATION_BATCH,
    Data,
    LossFn,
    TrainingState,
    TrainingSummary,
)

__all__ = [
    "VALIDATION_BATCH",
    "LossFn",
    "TrainingLoop",
    "TrainingState",
    "TrainingSummary",
    "default_callbacks",
    "flatten_parameters",
    "make_scheduler",
    "run_training",
    "split_train_val",
]


def _checked(
    config: TrainConfig, model: nn.Module, device: str | torch.device | None
) -> torch.device:
    """The training device, after checking the arguments' types and the device."""
    if not isinstance(config, TrainConfig):
        raise TypeError(
            f"config must be a TrainConfig, got {type(config).__name__}; "
            "build one with TrainConfig(batch_size=..., ...) or TrainConfig.from_sbi(**kwargs)"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dev = torch.device(device if device is not None else config.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(dev)!r} was asked for but CUDA is not available; use 'cpu'")
    return dev


def _with_validation(config: TrainConfig, train_data: Data, val_data: Data | None) -> tuple:
    """``(train_data, val_data)``, splitting ``config.validation_fraction`` off the tensors
    of ``train_data`` when ``val_data`` is None."""
    if val_data is not None:
        return train_data, val_data
    if not (
        isinstance(train_data, (tuple, list)) and all(isinstance(t, Tensor) for t in train_data)
    ):
        raise ValueError("val_data=None needs train_data as a tuple of tensors to split")
    return split_train_val(train_data, config.validation_fraction, config.seed)


def run_training(
    config: TrainConfig,
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Data,
    val_data: Data | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    callbacks: Sequence[Callback] = (),
    device: str | torch.device | None = None,
    round: int | None = None,
) -> TrainingSummary:
    """Train ``model`` by minimising the mean of ``loss_fn`` over mini-batches.

    Args:
        config: The training settings.
        model: Any torch module; trained in place and left on ``device``.
        loss_fn: ``loss_fn(model, batch) -> (B,)`` per-sample losses.
        train_data: A tuple of tensors ``(N, ...)`` sharing ``N`` (fast path: batches are
            drawn by index, no DataLoader), or any iterable of batches (a DataLoader).
        val_data: Same forms; None splits ``config.validation_fraction`` off
            ``train_data`` (tensors only).
        optimizer: Defaults to Adam with ``config.learning_rate``.
        scheduler: Defaults to the one ``config.scheduler`` describes.
        callbacks: Added after the stopping rules the config asks for (see
            :func:`default_callbacks`).
        device: Overrides ``config.device``.
        round: Recorded in the state for callbacks (the inference round).

    Returns:
        The summary: epochs, steps, best validation loss, stop reason, history.

    The global torch RNG is forked: the loss's randomness is seeded from ``config.seed``
    and the caller's RNG state is left as it was.

    Examples:
        >>> import torch
        >>> x = torch.randn(200, 3)
        >>> y = x.sum(dim=1)
        >>> def loss_fn(model, batch):  # per-sample losses, shape (B,)
        ...     xb, yb = batch
        ...     return (model(xb).squeeze(-1) - yb) ** 2
        >>> config = TrainConfig(batch_size=50, max_epochs=3, seed=0)
        >>> summary = run_training(config, torch.nn.Linear(3, 1), loss_fn, (x, y))
        >>> summary.epochs, summary.stop_reason
        (3, 'reached max_epochs=3')
    """
    dev = _checked(config, model, device)
    train_data, val_data = _with_validation(config, train_data, val_data)
    batch_size = resolve_batch_size(config.batch_size, data_rows(train_data))
    model.to(dev)
    flat = None
    if optimizer is None:
        flat = flatten_parameters(model)
        params = [flat] if flat is not None else [p for p in model.parameters() if p.requires_grad]
        optimizer = default_optimizer(params, config.learning_rate)
    if scheduler is None:
        scheduler = make_scheduler(config.scheduler, optimizer)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        loop = TrainingLoop(
            config,
            model,
            loss_fn,
            make_batches(train_data, batch_size, dev),
            make_batches(val_data, max(batch_size, VALIDATION_BATCH), dev),
            optimizer,
            scheduler,
            [*default_callbacks(config), *callbacks],
            dev,
            torch.Generator().manual_seed(config.seed),
            flat,
        )
        loop.state.round = round
        summary = dataclasses.replace(loop.fit(), batch_size=batch_size)
    if config.show_summary:
        print(summary.describe())
    return summary
