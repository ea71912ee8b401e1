"""Building the prior from its configuration, or, for a reader of a run, from stored data."""

from __future__ import annotations

import torch
from sbi.utils import BoxUniform
from torch.distributions import Distribution, constraints

from sbi_rounds.builders.imports import import_object
from sbi_rounds.config import PriorConfig

__all__ = ["StoredPrior", "build_prior"]


def build_prior(config: PriorConfig) -> Distribution:
    """The prior over parameters ``(D,)``: a ``BoxUniform`` or the imported factory's result.

    Raises:
        ValueError: The factory does not import, does not return a torch distribution, or
            the distribution is not over vectors ``(D,)``.
    """
    if config.path is None:
        return BoxUniform(
            low=torch.tensor(config.low, dtype=torch.float32),
            high=torch.tensor(config.high, dtype=torch.float32),
        )
    factory = import_object(config.path, "prior")
    try:
        prior = factory()
    except Exception as e:  # noqa: BLE001 - the user's factory may raise anything
        raise ValueError(f"prior {config.path} raised {type(e).__name__}: {e}") from e
    if not isinstance(prior, Distribution):
        raise ValueError(
            f"prior {config.path} returned {type(prior).__name__}; it must return a "
            "torch.distributions.Distribution (e.g. sbi.utils.BoxUniform(low, high))"
        )
    sample = prior.sample((2,))
    if sample.ndim != 2:
        raise ValueError(
            f"prior {config.path} samples have shape {tuple(sample.shape[1:])}; it must be a "
            "distribution over vectors (D,): wrap independent dims with "
            "torch.distributions.Independent(..., 1)"
        )
    _check_width(prior, config.path)
    return prior


def _check_width(prior: Distribution, path: str) -> None:
    """Refuse a prior without width: its own draws must vary and have a finite density.

    A uniform prior with ``high <= low`` in a parameter otherwise trains and then fails
    deep inside sbi (zero width) or hangs in rejection sampling (negative width).
    """
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        draws = prior.sample((1000,))
        log_prob = prior.log_prob(draws)
    if not torch.isfinite(log_prob).all():
        raise ValueError(
            f"prior {path} gives its own samples a density of zero or infinity "
            f"(log_prob {float(log_prob.min()):g}..{float(log_prob.max()):g}); a prior needs "
            "a positive width (high > low) in every parameter and a finite density"
        )
    flat = [i for i, s in enumerate(draws.std(dim=0).tolist()) if not s > 0]
    if flat:
        raise ValueError(
            f"prior {path} has zero width in parameter(s) {flat}: all its draws are equal; "
            "give every parameter a positive width (high > low)"
        )


class StoredPrior(Distribution):
    """A run's prior that is code (a factory), as a reader sees it without calling that
    code: the prior draws the run stored (round 1's parameters), drawn again with
    replacement. Enough for what a report shows (the prior's spread); its density and
    support are the factory's own, so :meth:`log_prob` refuses and says how to get them.

    Args:
        draws: Round 1's parameters, shape (N, D) (None: none stored yet).
        path: The factory's ``module:function``, for the messages.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(self, draws: torch.Tensor | None, path: str) -> None:
        self.draws, self.path = draws, path
        shape = torch.Size(() if draws is None else draws.shape[1:])
        super().__init__(event_shape=shape, validate_args=False)

    def needs_code(self) -> ValueError:
        """The error for a use that needs the factory itself."""
        return ValueError(
            f"the run's prior is code ({self.path}), and opening a run does not run code "
            "it names: pass import_code=True (sbi_rounds.load_posterior(path, "
            "import_code=True)) to import and call it, after its code is checked against "
            "the fingerprint the run recorded"
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Stored prior draws, drawn again with replacement, shape (*sample_shape, D)."""
        if self.draws is None or not len(self.draws):
            raise self.needs_code()
        shape = torch.Size(sample_shape)
        index = torch.randint(len(self.draws), (shape.numel(),))
        return self.draws[index].reshape(*shape, *self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise self.needs_code()
