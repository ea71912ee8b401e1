"""The training loop: epochs of steps, validation, events to callbacks, state to resume."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sbi_rounds.training.callbacks import Callback
from sbi_rounds.training.config import TrainConfig
from sbi_rounds.training.state import LossFn, TrainingState, TrainingSummary

__all__ = ["TrainingLoop"]


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
            [self._flat]
            if self._flat is not None
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
