"""What ``run_training`` builds before the loop: split, batches, optimizer, schedule, rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sbi_rounds.training.callbacks import (
    Callback,
    Divergence,
    LearningRateThreshold,
    ValidationLossPatience,
)
from sbi_rounds.training.config import SchedulerConfig, TrainConfig
from sbi_rounds.training.state import Data

__all__ = [
    "data_rows",
    "default_callbacks",
    "default_optimizer",
    "flatten_parameters",
    "make_batches",
    "make_scheduler",
    "split_train_val",
]


def split_train_val(
    tensors: Sequence[Tensor], validation_fraction: float, seed: int
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Split tensors ``(N, ...)`` into a random training and validation part.

    Returns:
        ``(train, val)``: tuples of tensors with ``N - n_val`` and ``n_val`` rows, where
        ``n_val = max(1, round(N * validation_fraction))``.
    """
    n = _num_rows(tensors)
    if n < 2:
        raise ValueError(f"need at least 2 samples to split off a validation set, got {n}")
    n_val = min(n - 1, max(1, int(round(n * validation_fraction))))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train_idx, val_idx = perm[n_val:], perm[:n_val]
    return tuple(t[train_idx] for t in tensors), tuple(t[val_idx] for t in tensors)


def data_rows(data: Data) -> int:
    """Rows of tensor data (an iterable of batches, whose loader sets the batch size: 0)."""
    if isinstance(data, Tensor):
        return data.shape[0]
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        return _num_rows(data)
    return 0


def _num_rows(tensors: Sequence[Tensor]) -> int:
    if not tensors:
        raise ValueError("data must hold at least one tensor")
    n = tensors[0].shape[0]
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"data must be tensors, got {type(t).__name__}")
        if t.shape[0] != n:
            raise ValueError(
                f"all data tensors must have the same first dimension, got "
                f"{[tuple(t.shape) for t in tensors]}"
            )
    return n


def make_scheduler(
    config: SchedulerConfig | None, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """Build the torch scheduler a :class:`SchedulerConfig` describes."""
    if config is None:
        return None
    sched = torch.optim.lr_scheduler
    if config.kind == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=config.t_max, eta_min=config.min_lr)
    if config.kind == "step":
        return sched.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.kind == "exponential":
        return sched.ExponentialLR(optimizer, gamma=config.gamma)
    return sched.ReduceLROnPlateau(
        optimizer, factor=config.gamma, patience=config.patience, min_lr=config.min_lr
    )


def default_callbacks(config: TrainConfig) -> list[Callback]:
    """The stopping rules a config asks for: patience, learning-rate floor, divergence."""
    callbacks: list[Callback] = []
    if config.patience is not None:
        callbacks.append(
            ValidationLossPatience(
                config.patience, config.min_delta, min_steps=config.patience_steps
            )
        )
    if config.min_lr is not None:
        callbacks.append(LearningRateThreshold(config.min_lr))
    if config.divergence_ratio is not None:
        callbacks.append(Divergence(config.divergence_ratio, config.divergence_checks))
    return callbacks


class _TensorBatches:
    """Shuffled mini-batches by index, without a DataLoader's per-sample collation."""

    def __init__(self, tensors: Sequence[Tensor], batch_size: int, device: torch.device) -> None:
        self.n = _num_rows(tensors)
        self.tensors = tuple(t.to(device) for t in tensors)
        self.batch_size = min(batch_size, self.n)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def shuffled(self, generator: torch.Generator) -> Iterable[tuple[Tensor, ...]]:
        perm = torch.randperm(self.n, generator=generator).to(self.tensors[0].device)
        for b in range(len(self)):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield tuple(t[idx] for t in self.tensors)

    def ordered(self) -> Iterable[tuple[Tensor, ...]]:
        for start in range(0, self.n, self.batch_size):
            yield tuple(t[start : start + self.batch_size] for t in self.tensors)


class _LoaderBatches:
    """Any iterable of batches (a DataLoader), moved to the device batch by batch."""

    def __init__(self, loader: Iterable[Sequence[Tensor]], device: torch.device) -> None:
        self.loader, self.device = loader, device

    def _moved(self) -> Iterable[tuple[Tensor, ...]]:
        for batch in self.loader:
            yield tuple(t.to(self.device, non_blocking=True) for t in batch)

    def shuffled(self, generator: torch.Generator) -> Iterable[tuple[Tensor, ...]]:
        return self._moved()

    def ordered(self) -> Iterable[tuple[Tensor, ...]]:
        return self._moved()


def flatten_parameters(model: nn.Module) -> Tensor | None:
    """Make the model's trainable parameters and their gradients views of two flat buffers.

    The optimizer and gradient clipping then update one tensor of ``P`` elements instead of
    one per layer: a flow's few dozen parameter tensors otherwise cost a Python loop and a
    kernel launch each, every step (about 2 ms a step on a CPU, 10-20% of a small network's
    step). Autograd accumulates into the gradient views in place, like PyTorch's
    ``DistributedDataParallel(gradient_as_bucket_view=True)``. Weights, ``state_dict`` and
    ``load_state_dict`` are unchanged for the model's users.

    Args:
        model: A module whose parameters already are on their training device.

    Returns:
        The flat parameter buffer, shape ``(P,)``, with its flat gradient as ``.grad``; None
        (nothing changed) when there is nothing to train or the parameters mix devices,
        dtypes or layouts.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    first = params[0]
    if any(
        p.device != first.device
        or p.dtype != first.dtype
        or p.layout != torch.strided
        or not p.dtype.is_floating_point
        for p in params
    ):
        return None
    if len({p.data_ptr() for p in params}) != len(params):
        return None  # shared parameters: leave them as they are
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        grad = torch.zeros_like(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = flat[offset : offset + n].view_as(p)
            p.grad = grad[offset : offset + n].view_as(p)
            offset += n
    flat.grad = grad
    return flat


def default_optimizer(params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where torch supports it (CPU and CUDA floats)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # e.g. parameters of a dtype the fused kernel lacks
        return torch.optim.Adam(params, lr=lr)


def make_batches(data: Data, batch_size: int, device: torch.device) -> Any:
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        return _TensorBatches(data, batch_size, device)
    if isinstance(data, Tensor):
        return _TensorBatches((data,), batch_size, device)
    if isinstance(data, Iterable):
        return _LoaderBatches(data, device)
    raise TypeError(
        f"data must be a tuple of tensors or an iterable of batches, got {type(data).__name__}"
    )
