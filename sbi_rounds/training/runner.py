"""The unified training loop: ``run_training`` trains any torch module on any per-sample loss."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sbi_rounds.training.callbacks import (
    Callback,
    Divergence,
    LearningRateThreshold,
    ValidationLossPatience,
)
from sbi_rounds.training.config import SchedulerConfig, TrainConfig, resolve_batch_size

__all__ = [
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

#: ``loss_fn(model, batch) -> losses``: per-sample losses of shape ``(B,)`` for a batch
#: given as a tuple of tensors that share their first dimension ``B``.
LossFn = Callable[[nn.Module, tuple[Tensor, ...]], Tensor]

Data = Sequence[Tensor] | Iterable[Sequence[Tensor]]


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


def _data_rows(data: Data) -> int:
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
        callbacks.append(ValidationLossPatience(config.patience, config.min_delta))
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


#: Validation rows per forward pass (at least the batch size): fewer, larger passes cost less
#: than training-sized ones, and no gradients are kept.
VALIDATION_BATCH = 1024


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
        p.device != first.device or p.dtype != first.dtype or p.layout != torch.strided
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


def _default_optimizer(params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where torch supports it (CPU and CUDA floats)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # e.g. parameters of a dtype the fused kernel lacks
        return torch.optim.Adam(params, lr=lr)


def _batches(data: Data, batch_size: int, device: torch.device) -> Any:
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        return _TensorBatches(data, batch_size, device)
    if isinstance(data, Tensor):
        return _TensorBatches((data,), batch_size, device)
    if isinstance(data, Iterable):
        return _LoaderBatches(data, device)
    raise TypeError(
        f"data must be a tuple of tensors or an iterable of batches, got {type(data).__name__}"
    )


class TrainingLoop:
    """One fit of a model. Callbacks steer it only through its public methods."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        loss_fn: LossFn,
        train: Any,
        val: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        callbacks: Sequence[Callback],
        device: torch.device,
        generator: torch.Generator,
        flat: Tensor | None = None,
    ) -> None:
        self.config, self.model, self.loss_fn = config, model, loss_fn
        self._flat = flat
        self._train, self._val = train, val
        self.optimizer, self.scheduler = optimizer, scheduler
        self.callbacks = list(callbacks)
        self.device, self.generator = device, generator
        self.state = TrainingState(learning_rate=self._current_lr())
        self.ema: AveragedModel | None = None
        if config.ema_decay is not None:
            self.ema = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
            )
        self.stop_requested = False
        self.stop_reason = ""
        self.limit_reached: str | None = None
        self.resumed_from_epoch = 0

    # --- the methods callbacks may call -------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop after the current epoch."""
        if not self.stop_requested:
            self.stop_requested, self.stop_reason = True, reason

    def set_learning_rate(self, lr: float) -> None:
        """Set the learning rate of every parameter group."""
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr!r}")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.state.learning_rate = lr

    def get_weights(self) -> dict[str, Tensor]:
        """A copy of the weights being evaluated (the EMA weights when EMA is on)."""
        source = self.ema.module if self.ema is not None else self.model
        return {k: v.detach().clone() for k, v in source.state_dict().items()}

    def load_weights(self, weights: Mapping[str, Tensor]) -> None:
        """Load weights into the model (and into the EMA copy when EMA is on)."""
        self.model.load_state_dict(weights)
        if self.ema is not None:
            self.ema.module.load_state_dict(weights)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this fit exactly: see ``restore``."""
        s = self.state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "epoch": s.epoch,
            "step": s.step,
            "elapsed": s.elapsed,
            "train_loss": s.train_loss,
            "val_loss": s.val_loss,
            "history": {k: list(v) for k, v in s.history.items()},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device)
            if self.device.type == "cuda"
            else None,
            "callbacks": [
                {"type": type(cb).__name__, "state": cb.state_dict()} for cb in self.callbacks
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict()`` saved by an earlier, interrupted fit."""
        matched = self._match_callbacks(state["callbacks"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        s = self.state
        s.epoch, s.step, s.elapsed = (
            int(state["epoch"]),
            int(state["step"]),
            float(state["elapsed"]),
        )
        s.train_loss, s.val_loss = state.get("train_loss"), state.get("val_loss")
        s.history = {
            k: [float(v) for v in state["history"][k]] for k in TrainingSummary.HISTORY_KEYS
        }
        s.learning_rate = self._current_lr()
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        for cb, saved_state in matched:
            cb.load_state_dict(saved_state)
        self.resumed_from_epoch = s.epoch

    def _match_callbacks(self, saved: list[Mapping[str, Any]]) -> list[tuple[Callback, Any]]:
        """Pair saved callback states with this fit's callbacks by type and occurrence.

        Callbacks without state (progress bars, trackers) may differ between sessions; a
        saved stateful callback (e.g. early stopping) missing now is an error, since its
        counters would be silently lost.
        """
        current: dict[str, list[Callback]] = {}
        for cb in self.callbacks:
            current.setdefault(type(cb).__name__, []).append(cb)
        seen: dict[str, int] = {}
        matched, missing = [], []
        for entry in saved:
            name = entry["type"]
            i = seen.get(name, 0)
            seen[name] = i + 1
            candidates = current.get(name, [])
            if i < len(candidates):
                matched.append((candidates[i], entry["state"]))
            elif entry["state"]:
                missing.append(name)
        if missing:
            raise ValueError(
                f"the checkpoint holds the state of callbacks {missing} that this training "
                f"does not have (it has {[type(cb).__name__ for cb in self.callbacks]}); resume "
                "with the same stopping rules, or start the training afresh (resume=False)"
            )
        return matched

    # --- the loop -----------------------------------------------------------------------
    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _emit(self, event: str) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self)

    def _limits_reached(self) -> bool:
        c, s = self.config, self.state
        if self.stop_requested:
            return True
        if c.max_epochs is not None and s.epoch >= c.max_epochs:
            self.limit_reached = "max_epochs"
            self.request_stop(f"reached max_epochs={c.max_epochs}")
        elif c.max_steps is not None and s.step >= c.max_steps:
            self.limit_reached = "max_steps"
            self.request_stop(f"reached max_steps={c.max_steps}")
        elif c.max_time is not None and s.elapsed >= c.max_time:
            self.limit_reached = "max_time"
            self.request_stop(f"reached max_time={c.max_time:g} s")
        return self.stop_requested

    def _train_epoch(self) -> float:
        c, model = self.config, self.model
        params = (
            [self._flat] if self._flat is not None
            else [p for p in model.parameters() if p.requires_grad]
        )
        model.train()
        total = torch.zeros((), device=self.device)
        count = 0
        self._zero_grad()
        pending = 0
        for batch in self._train.shuffled(self.generator):
            losses = self.loss_fn(model, batch)
            loss = losses.mean()
            (loss / c.grad_accumulation if c.grad_accumulation > 1 else loss).backward()
            total += losses.detach().sum()
            count += losses.shape[0]
            pending += 1
            if pending == c.grad_accumulation:
                self._optimizer_step(params)
                pending = 0
                if c.max_steps is not None and self.state.step >= c.max_steps:
                    break
        if pending:
            self._optimizer_step(params)
        if count == 0:
            raise ValueError("the training data gave no batch; provide at least one sample")
        mean = float(total) / count
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"training loss became {mean} in epoch {self.state.epoch + 1}; lower "
                f"learning_rate or set clip_grad_norm (now {c.clip_grad_norm})"
            )
        return mean

    def _optimizer_step(self, params: list[Tensor]) -> None:
        if self.config.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm, foreach=True)
        self.optimizer.step()
        self._zero_grad()
        self.state.step += 1
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def _zero_grad(self) -> None:
        if self._flat is not None:
            self._flat.grad.zero_()  # the parameters' gradients are views of it: keep them
        else:
            self.optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def _validate(self) -> float:
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        total = torch.zeros((), device=self.device)
        count = 0
        for batch in self._val.ordered():
            losses = self.loss_fn(model, batch)
            total += losses.sum()
            count += losses.shape[0]
        if count == 0:
            raise ValueError("the validation data gave no batch; provide at least one sample")
        return float(total) / count

    def _step_scheduler(self) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(self.state.val_loss)
        else:
            self.scheduler.step()

    def fit(self) -> TrainingSummary:
        """Run epochs until a limit or a callback stops it, and summarise."""
        self.model.to(self.device)
        if self.ema is not None:
            self.ema.to(self.device)
        s = self.state
        try:
            self._emit("on_fit_start")
            while not self._limits_reached():
                t0 = time.perf_counter()
                self._emit("on_epoch_start")
                s.train_loss = self._train_epoch()
                s.val_loss = self._validate()
                s.epoch += 1
                self._emit("on_validation_end")
                self._step_scheduler()
                s.learning_rate = self._current_lr()
                s.epoch_time = time.perf_counter() - t0
                s.elapsed += s.epoch_time
                for key, value in zip(
                    TrainingSummary.HISTORY_KEYS,
                    (s.train_loss, s.val_loss, s.learning_rate, s.epoch_time),
                    strict=True,
                ):
                    s.history[key].append(float(value))
                self._emit("on_epoch_end")
            if self.ema is not None:
                self.model.load_state_dict(self.ema.module.state_dict())
            self._emit("on_fit_end")
        except BaseException as error:
            for cb in self.callbacks:
                cb.on_exception(self, error)
            raise
        self.model.zero_grad(set_to_none=True)
        return self._summary()

    def _summary(self) -> TrainingSummary:
        val = self.state.history["val_loss"]
        best_epoch = min(range(len(val)), key=val.__getitem__) + 1 if val else 0
        return TrainingSummary(
            epochs=self.state.epoch,
            steps=self.state.step,
            best_val_loss=min(val) if val else math.nan,
            best_epoch=best_epoch,
            final_train_loss=self.state.train_loss
            if self.state.train_loss is not None
            else math.nan,
            stop_reason=self.stop_reason,
            limit_reached=self.limit_reached,
            elapsed=self.state.elapsed,
            resumed_from_epoch=self.resumed_from_epoch,
            history={k: list(v) for k, v in self.state.history.items()},
        )


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
    """
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
    if val_data is None:
        if not (
            isinstance(train_data, (tuple, list)) and all(isinstance(t, Tensor) for t in train_data)
        ):
            raise ValueError("val_data=None needs train_data as a tuple of tensors to split")
        train_data, val_data = split_train_val(train_data, config.validation_fraction, config.seed)
    batch_size = resolve_batch_size(config.batch_size, _data_rows(train_data))
    model.to(dev)
    flat = None
    if optimizer is None:
        flat = flatten_parameters(model)
        params = [flat] if flat is not None else [p for p in model.parameters() if p.requires_grad]
        optimizer = _default_optimizer(params, config.learning_rate)
    if scheduler is None:
        scheduler = make_scheduler(config.scheduler, optimizer)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        loop = TrainingLoop(
            config,
            model,
            loss_fn,
            _batches(train_data, batch_size, dev),
            _batches(val_data, max(batch_size, VALIDATION_BATCH), dev),
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
        print(
            f"trained {summary.epochs} epochs ({summary.steps} steps), best validation "
            f"loss {summary.best_val_loss:.4f} at epoch {summary.best_epoch}: {summary.stop_reason}"
        )
    return summary
