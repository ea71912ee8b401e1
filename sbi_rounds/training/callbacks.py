"""Training callbacks: the event protocol, early stopping rules, tracking and checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from sbi_rounds.training.loop import TrainingLoop
    from sbi_rounds.training.trackers import Tracker

__all__ = [
    "EVENTS",
    "Callback",
    "CheckpointCallback",
    "CheckpointSink",
    "Divergence",
    "LearningRateThreshold",
    "ProgressBar",
    "StoppingRule",
    "StopWhen",
    "TrackerCallback",
    "ValidationLossPatience",
]

#: The events a callback can handle, in the order one epoch raises them.
EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
    "on_exception",
)


class Callback:
    """Base class of training callbacks: every hook does nothing until overridden.

    A callback reads ``loop.state`` and changes the loop only through the loop's own
    methods (``request_stop``, ``set_learning_rate``, ``load_weights``, ``restore``).
    An exception raised by a hook propagates: the loop never swallows it. A subclass
    that defines a method named ``on_...`` that is not an event is rejected at
    construction, so a misspelled hook cannot be skipped without a word.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = [n for n in vars(cls) if n.startswith("on_") and n not in EVENTS]
        if unknown:
            raise TypeError(
                f"{cls.__name__} defines {unknown}, which are not training events; "
                f"the events are {list(EVENTS)}"
            )

    def on_fit_start(self, loop: TrainingLoop) -> None:
        """Called once before the first epoch (after a checkpoint was restored)."""

    def on_epoch_start(self, loop: TrainingLoop) -> None:
        """Called at the start of every epoch."""

    def on_validation_end(self, loop: TrainingLoop) -> None:
        """Called after the validation loss of an epoch is in ``loop.state``."""

    def on_epoch_end(self, loop: TrainingLoop) -> None:
        """Called at the end of every epoch, after the scheduler stepped."""

    def on_fit_end(self, loop: TrainingLoop) -> None:
        """Called once after the last epoch."""

    def on_exception(self, loop: TrainingLoop, error: BaseException) -> None:
        """Called when training raises (KeyboardInterrupt included), before it propagates."""

    def state_dict(self) -> dict[str, Any]:
        """The callback's own counters, saved in training checkpoints."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class ValidationLossPatience(Callback):
    """Stop after ``patience`` epochs without the validation loss improving by ``min_delta``
    and, when ``min_steps`` is given, at least that many optimizer steps since the best.

    Restores the best weights at the end when ``restore_best`` (the default). One instance
    serves many fits: it resets itself at fit start.
    """

    def __init__(
        self,
        patience: int = 20,
        min_delta: float = 0.0,
        restore_best: bool = True,
        min_steps: int | None = None,
    ) -> None:
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if min_steps is not None and (not isinstance(min_steps, int) or min_steps < 1):
            raise ValueError(f"min_steps must be an integer >= 1 or None, got {min_steps!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self.min_steps = min_steps
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf
        self.best_epoch = -1
        self.best_step = 0
        self.wait = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, loop: TrainingLoop) -> None:
        if loop.state.epoch == 0:
            self._reset()

    def on_validation_end(self, loop: TrainingLoop) -> None:
        val = loop.state.val_loss
        if val is None:
            return
        if val < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = val, loop.state.epoch, 0
            self.best_step = loop.state.step
            if self.restore_best:
                self.best_weights = loop.get_weights()
            return
        self.wait += 1
        steps = loop.state.step - self.best_step
        if self.wait >= self.patience and (self.min_steps is None or steps >= self.min_steps):
            floor = "" if self.min_steps is None else f" and {steps} steps"
            loop.request_stop(
                f"validation loss did not improve by more than {self.min_delta} "
                f"for {self.wait} epochs{floor}"
            )

    def on_fit_end(self, loop: TrainingLoop) -> None:
        if self.restore_best and self.best_weights is not None:
            loop.load_weights(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "wait": self.wait,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.best_step = int(state.get("best_step", 0))  # checkpoints of earlier versions
        self.wait = int(state["wait"])
        self.best_weights = state.get("best_weights")


class LearningRateThreshold(Callback):
    """Stop once a scheduler has driven the learning rate below ``min_lr``."""

    def __init__(self, min_lr: float) -> None:
        if not min_lr > 0:
            raise ValueError(f"min_lr must be > 0, got {min_lr!r}")
        self.min_lr = float(min_lr)

    def on_epoch_end(self, loop: TrainingLoop) -> None:
        if loop.state.learning_rate < self.min_lr:
            loop.request_stop(
                f"learning rate {loop.state.learning_rate:.3g} fell below min_lr={self.min_lr:g}"
            )


class Divergence(Callback):
    """Stop when validation loss exceeds training loss by ``ratio`` for ``checks`` epochs.

    The gap counts as divergent when ``val - train > ratio * max(|train|, 1)``: a relative
    gap that stays meaningful for negative log-likelihoods near zero.
    """

    def __init__(self, ratio: float = 1.0, checks: int = 5) -> None:
        if not ratio > 0:
            raise ValueError(f"ratio must be > 0, got {ratio!r}")
        if not isinstance(checks, int) or checks < 1:
            raise ValueError(f"checks must be an integer >= 1, got {checks!r}")
        self.ratio, self.checks, self.count = float(ratio), checks, 0

    def on_fit_start(self, loop: TrainingLoop) -> None:
        if loop.state.epoch == 0:
            self.count = 0

    def on_validation_end(self, loop: TrainingLoop) -> None:
        train, val = loop.state.train_loss, loop.state.val_loss
        if train is None or val is None:
            return
        if val - train > self.ratio * max(abs(train), 1.0):
            self.count += 1
            if self.count >= self.checks:
                loop.request_stop(
                    f"validation loss exceeded training loss by more than the ratio "
                    f"{self.ratio:g} for {self.checks} epochs (diverging)"
                )
        else:
            self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = int(state["count"])


@runtime_checkable
class StoppingRule(Protocol):
    """Any external stopping strategy: return a reason to stop, or None to go on."""

    def __call__(self, state: Any) -> str | bool | None: ...


class StopWhen(Callback):
    """Adapter that plugs any :class:`StoppingRule` (a plain callable works) into the loop.

    The rule is asked after every validation with the loop's read-only state; a truthy
    answer stops training (a string is used as the reason).
    """

    def __init__(self, rule: StoppingRule | Callable[[Any], str | bool | None]) -> None:
        if not callable(rule):
            raise TypeError(f"StopWhen needs a callable rule(state), got {type(rule).__name__}")
        self.rule = rule

    def on_validation_end(self, loop: TrainingLoop) -> None:
        verdict = self.rule(loop.state)
        if verdict:
            name = getattr(self.rule, "__name__", type(self.rule).__name__)
            loop.request_stop(verdict if isinstance(verdict, str) else f"{name} asked to stop")


class TrackerCallback(Callback):
    """Logs the config as parameters and per-epoch losses, learning rate and epoch time.

    Args:
        tracker: Any :class:`~sbi_rounds.training.trackers.Tracker`.
        prefix: Put before every metric and parameter name.
        step_offset: Added to the epoch to give the step (e.g. epochs of earlier rounds).
        log_params: Log the training config as parameters at fit start (turn off when the
            caller logs its own parameters once, as the flow does for a whole run).
    """

    def __init__(
        self, tracker: Tracker, prefix: str = "", step_offset: int = 0, log_params: bool = True
    ) -> None:
        self.tracker, self.prefix, self.step_offset = tracker, prefix, step_offset
        self.log_params = log_params

    def on_fit_start(self, loop: TrainingLoop) -> None:
        if loop.state.epoch == 0 and self.log_params:
            params = loop.config.model_dump(mode="json")
            self.tracker.log_params({f"{self.prefix}{k}": v for k, v in params.items()})

    def on_epoch_end(self, loop: TrainingLoop) -> None:
        s = loop.state
        metrics = {
            "train_loss": s.train_loss,
            "val_loss": s.val_loss,
            "learning_rate": s.learning_rate,
            "epoch_time": s.epoch_time,
        }
        self.tracker.log_metrics(
            {f"{self.prefix}{k}": float(v) for k, v in metrics.items() if v is not None},
            step=self.step_offset + s.epoch,
        )

    def on_fit_end(self, loop: TrainingLoop) -> None:
        self.tracker.flush()


@runtime_checkable
class CheckpointSink(Protocol):
    """Where training checkpoints go (the run store provides one per round)."""

    def save(self, state: Mapping[str, Any]) -> None:
        """Persist a nested mapping of tensors, numbers, strings, lists and None."""

    def load(self) -> Mapping[str, Any] | None:
        """Return the last saved state, or None."""


class CheckpointCallback(Callback):
    """Saves the whole training state every ``every`` epochs (at most once per
    ``min_seconds``) and restores it at fit start.

    The state holds model, optimizer, scheduler, EMA, epoch, step, history, every
    callback's own state and the RNG states, so a training killed and restarted ends with
    the same result as one that was never interrupted (same seed, same device).
    """

    def __init__(
        self,
        sink: CheckpointSink,
        every: int = 10,
        resume: bool = True,
        min_seconds: float = 0.0,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if not min_seconds >= 0:
            raise ValueError(f"min_seconds must be >= 0, got {min_seconds!r}")
        self.sink, self.every, self.resume = sink, every, resume
        self.min_seconds = float(min_seconds)
        self.last_save_seconds = 0.0
        self.saves = 0
        self._last_save = time.monotonic()

    def on_fit_start(self, loop: TrainingLoop) -> None:
        self._last_save = time.monotonic()
        if self.resume:
            state = self.sink.load()
            if state is not None:
                loop.restore(state)

    def on_epoch_end(self, loop: TrainingLoop) -> None:
        """Save every ``every`` epochs, but at most once per ``min_seconds`` of training."""
        if loop.state.epoch % self.every or loop.stop_requested:
            return
        if time.monotonic() - self._last_save < self.min_seconds:
            return
        t0 = time.perf_counter()
        self.sink.save(loop.state_dict())
        self.last_save_seconds = time.perf_counter() - t0
        self.saves += 1
        self._last_save = time.monotonic()


class ProgressBar(Callback):
    """A tqdm progress bar over epochs with the latest losses (to stderr)."""

    def __init__(self, description: str = "training", leave: bool = True) -> None:
        self.description, self.leave = description, leave
        self._bar: Any = None

    def on_fit_start(self, loop: TrainingLoop) -> None:
        from tqdm.auto import tqdm

        total = loop.config.max_epochs
        self._bar = tqdm(
            total=total,
            initial=loop.state.epoch,
            desc=self.description,
            unit="epoch",
            leave=self.leave,
            dynamic_ncols=True,
        )

    def on_epoch_end(self, loop: TrainingLoop) -> None:
        if self._bar is not None:
            s = loop.state
            self._bar.set_postfix(
                train=f"{s.train_loss:.3f}", val=f"{s.val_loss:.3f}", refresh=False
            )
            self._bar.update(1)

    def on_fit_end(self, loop: TrainingLoop) -> None:
        self._close()

    def on_exception(self, loop: TrainingLoop, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
