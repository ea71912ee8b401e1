"""The errors a run raises on purpose: stopped, refused settings, an invalid round."""

from __future__ import annotations

__all__ = ["CodeChangedError", "ConfigMismatchError", "InvalidRoundError", "RunInterrupted"]


class ConfigMismatchError(ValueError):
    """Resuming with settings that change what the run computes."""


class InvalidRoundError(RuntimeError):
    """Too few valid simulations in a round."""


class RunInterrupted(KeyboardInterrupt):
    """The run was asked to stop (Ctrl-C, SIGTERM, a Prefect cancellation)."""


class CodeChangedError(ConfigMismatchError):
    """Resuming with a simulator or prior whose code changed under the same name."""
