"""The errors a run raises on purpose: stopped, refused settings, an invalid round, a
posterior too leaky to sample; and the warning for a loaded posterior that samples slowly."""

from __future__ import annotations

__all__ = [
    "CodeChangedError",
    "ConfigMismatchError",
    "InvalidRoundError",
    "LeakageError",
    "LeakageWarning",
    "RunInterrupted",
]


class ConfigMismatchError(ValueError):
    """Resuming with settings that change what the run computes."""


class InvalidRoundError(RuntimeError):
    """Too few valid simulations in a round."""


class LeakageError(RuntimeError):
    """Sampling a posterior that leaks out of the prior would take longer than allowed
    (``posterior.max_sampling_seconds``; see ``sbi_rounds.methods.leakage``)."""


class LeakageWarning(UserWarning):
    """A loaded posterior puts little of its mass inside the prior: sbi's rejection makes
    its ``sample`` slow (``sbi_rounds.load_posterior``)."""


class RunInterrupted(KeyboardInterrupt):
    """The run was asked to stop (Ctrl-C, SIGTERM, a Prefect cancellation)."""


class CodeChangedError(ConfigMismatchError):
    """Resuming with a simulator or prior whose code changed under the same name."""
