"""Cancellation as a token: whoever may stop a run sets it; the round checks it."""

from __future__ import annotations

import threading
import weakref

from sbi_rounds.errors import RunInterrupted
from sbi_rounds.training import Callback, TrainingLoop

__all__ = ["CancelToken", "StopOnCancel"]


class CancelToken:
    """A request to stop a run at its next check.

    A signal handler, a Prefect cancellation watch or another thread calls :meth:`cancel`;
    the round polls :meth:`is_set` while simulating, checks between stages
    (:meth:`check`), and its training stops at the next epoch (:class:`StopOnCancel`).
    Every commit is atomic, so a stop at any check loses nothing committed.

    Examples:
        >>> token = CancelToken()
        >>> token.is_set()
        False
        >>> token.cancel("a test")
        >>> token.is_set(), token.reason
        (True, 'a test')
    """

    #: The tokens of this process's runs (:meth:`cancel_all`).
    _live: weakref.WeakSet[CancelToken] = weakref.WeakSet()

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        CancelToken._live.add(self)

    @classmethod
    def cancel_all(cls, reason: str = "cancelled") -> None:
        """Ask every run of this process to stop (a campaign stopped by a signal)."""
        for token in list(cls._live):
            token.cancel(reason)

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the run to stop at its next check."""
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for (a ``should_stop`` callable for the stages)."""
        return self._event.is_set()

    def check(self, what: str) -> None:
        """Raise :class:`RunInterrupted` ("stopped before ``what``") when a stop was asked."""
        if self.is_set():
            raise RunInterrupted(f"stopped before {what}")

    def training_callback(self) -> StopOnCancel:
        """A training callback that stops the training at the next epoch once cancelled."""
        return StopOnCancel(self)


class StopOnCancel(Callback):
    """Interrupts training at the start of an epoch once its token is cancelled.

    Training resumes from its last checkpoint in the run file (``training.checkpoint_every``).
    """

    def __init__(self, token: CancelToken) -> None:
        self.token = token

    def on_epoch_start(self, loop: TrainingLoop) -> None:
        """Raise :class:`RunInterrupted` when the token is cancelled."""
        if self.token.is_set():
            raise RunInterrupted(f"stopped while training, at epoch {loop.state.epoch}")
