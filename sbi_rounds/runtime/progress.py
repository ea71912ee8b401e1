"""Where a run is: the current round and stage, simulation counts, training epochs.

A :class:`ProgressView` is told what happens (``stage``, ``simulated``, ``epoch``) and shows
it. Two views come with the library: :class:`PeriodicLines`, one log line per stage
at most every ``interval`` seconds (batch jobs, Prefect workers: a log file says where a run
is, also during hours of simulation), and :class:`NoProgress`. The terminal's live display
(``flows.cli.console``) is a third. :func:`observed_stages` makes a round's stage table
report its stages to a view, :class:`EpochProgress` reports training epochs. A program that
shows its own view (the command line's live display) sets it with :func:`showing`; a flow
uses :func:`current_view`, or log lines when none is set.

Example::

    view = PeriodicLines(logging.getLogger("run"), interval=30, rounds=3)
    run_round(run, 1, client, table=observed_stages(STAGES, view, 1),
              callbacks=[EpochProgress(view)])
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from sbi_rounds.training import Callback

__all__ = [
    "STAGE_WORDS",
    "EpochInfo",
    "EpochProgress",
    "NoProgress",
    "PeriodicLines",
    "ProgressView",
    "SimulationInfo",
    "current_view",
    "describe",
    "duration",
    "observed_stages",
    "showing",
]

#: What each stage of a round is called where a person reads it.
STAGE_WORDS = {
    "sample": "sampling the proposal",
    "cluster": "waiting for the Dask cluster",
    "simulate": "simulating",
    "append": "appending simulations",
    "train": "training",
    "posterior": "building the posterior",
    "checkpoint": "writing the round",
    "checks": "checking the posterior",
}


@dataclass(frozen=True)
class SimulationInfo:
    """Simulations of the round done so far (``rate``: simulations per second, this session)."""

    done: int
    total: int
    rate: float

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None: no rate yet)."""
        if self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


@dataclass(frozen=True)
class EpochInfo:
    """The training after an epoch: the best validation loss and the epochs since it.

    ``patience`` and ``max_epochs`` are the training's limits (None: not set).
    """

    epoch: int
    val_loss: float | None
    best_val_loss: float | None
    best_epoch: int
    patience: int | None
    max_epochs: int | None

    @property
    def since_best(self) -> int:
        """Epochs since the best validation loss."""
        return self.epoch - self.best_epoch if self.best_epoch else 0


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``4 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def describe(name: str, info: SimulationInfo | EpochInfo | None, elapsed: float) -> str:
    """One stage's status in words, e.g. ``simulating: 600/1000 (60%), 250/s, 2 s left``."""
    word = STAGE_WORDS.get(name, name)
    if isinstance(info, SimulationInfo):
        pct = 100 * info.done / info.total if info.total else 100.0
        eta = "" if info.eta is None else f", about {duration(info.eta)} left"
        rate = f", {info.rate:.3g} simulations/s" if info.rate > 0 else ""
        return f"{word}: {info.done}/{info.total} ({pct:.0f}%){rate}{eta}"
    if isinstance(info, EpochInfo):
        text = f"{word}: epoch {info.epoch}"
        if info.max_epochs is not None:
            text += f" of at most {info.max_epochs}"
        if info.best_val_loss is not None and math.isfinite(info.best_val_loss):
            text += f", best validation loss {info.best_val_loss:.4g} at epoch {info.best_epoch}"
            if info.patience is not None:
                text += f" ({info.since_best} of {info.patience} epochs of patience used)"
        return text
    return f"{word} ({duration(elapsed)} so far)"


class ProgressView(Protocol):
    """What a progress display is told. Every method is called from the flow's thread."""

    def stage(self, round_: int, name: str) -> None:
        """A stage of ``round_`` starts (``name``: a key of :data:`STAGE_WORDS`)."""

    def simulated(self, info: SimulationInfo) -> None:
        """Simulations were committed."""

    def epoch(self, info: EpochInfo) -> None:
        """A training epoch ended."""

    def close(self) -> None:
        """The run ends: stop showing progress."""


class NoProgress:
    """Shows nothing (a :class:`ProgressView`)."""

    def stage(self, round_: int, name: str) -> None:
        pass

    def simulated(self, info: SimulationInfo) -> None:
        pass

    def epoch(self, info: EpochInfo) -> None:
        pass

    def close(self) -> None:
        pass


class PeriodicLines:
    """Logs where the run is at most every ``interval`` seconds per stage (a
    :class:`ProgressView`), also while nothing changes: a log says a chunk is still running.

    A stage shorter than ``interval`` prints nothing.

    Args:
        logger: Where lines go (INFO).
        interval: Seconds between two lines of the same stage (> 0).
        rounds: The run's rounds, shown as ``round 2/5``.
        clock: ``time.monotonic`` (tests pass their own).
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        interval: float,
        rounds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.logger, self.interval, self.rounds, self.clock = logger, interval, rounds, clock
        self._lock = threading.Lock()
        self._current: tuple[int, str] | None = None
        self._info: SimulationInfo | EpochInfo | None = None
        self._started = self._last = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def stage(self, round_: int, name: str) -> None:
        with self._lock:
            self._current, self._info = (round_, name), None
            self._started = self._last = self.clock()
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="progress-lines", daemon=True)
            self._thread.start()

    def simulated(self, info: SimulationInfo) -> None:
        self._update(info)

    def epoch(self, info: EpochInfo) -> None:
        self._update(info)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._current = None

    def _update(self, info: SimulationInfo | EpochInfo) -> None:
        with self._lock:
            self._info = info
        self.tick()

    def tick(self) -> None:
        """Log the current stage's status if ``interval`` passed since its last line."""
        with self._lock:
            now = self.clock()
            if self._current is None or now - self._last < self.interval:
                return
            self._last = now
            (round_, name), info, started = self._current, self._info, self._started
        text = describe(name, info, now - started)
        self.logger.info("round %d/%d %s", round_, self.rounds, text)

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval / 4)):
            self.tick()


class EpochProgress(Callback):
    """Tells a view the epoch, the best validation loss and the epochs since it."""

    def __init__(self, view: ProgressView) -> None:
        self.view = view

    def on_epoch_end(self, loop: Any) -> None:
        s, c = loop.state, loop.config
        val = [v for v in s.history.get("val_loss", []) if v is not None]
        best = min(range(len(val)), key=val.__getitem__) if val else None
        self.view.epoch(
            EpochInfo(
                epoch=s.epoch,
                val_loss=s.val_loss,
                best_val_loss=None if best is None else float(val[best]),
                best_epoch=0 if best is None else s.epoch - len(val) + best + 1,
                patience=getattr(c, "patience", None),
                max_epochs=getattr(c, "max_epochs", None),
            )
        )


def observed_stages(table: Any, view: ProgressView, round_: int) -> Any:
    """``table`` (a :class:`~sbi_rounds.stages.round.StageTable`) whose stages tell ``view`` when
    they start."""

    def observe(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def stage(*args: Any, **kwargs: Any) -> Any:
            view.stage(round_, name)
            return fn(*args, **kwargs)

        return stage

    fields = {f.name: observe(f.name, getattr(table, f.name)) for f in dataclasses.fields(table)}
    return dataclasses.replace(table, **fields)


_VIEW: ContextVar[ProgressView | None] = ContextVar("sbi_rounds_progress_view", default=None)


@contextmanager
def showing(view: ProgressView) -> Iterator[ProgressView]:
    """While inside, :func:`current_view` is ``view``; closed on the way out."""
    token = _VIEW.set(view)
    try:
        yield view
    finally:
        _VIEW.reset(token)
        view.close()


def current_view() -> ProgressView | None:
    """The view a program set with :func:`showing`, or None."""
    return _VIEW.get()
