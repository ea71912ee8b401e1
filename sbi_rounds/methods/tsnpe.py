"""TSNPE (Deistler et al. 2022): the prior truncated to the posterior's high-density region."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field
from torch import Tensor
from torch.distributions import Distribution

from sbi_rounds.methods.base import DirectMethod, Proposal
from sbi_rounds.methods.leakage import measure_truncation
from sbi_rounds.methods.snpe import npe_loss
from sbi_rounds.strict import STRICT
from sbi_rounds.training.state import LossFn

__all__ = ["TSNPE", "TruncationConfig", "density_threshold", "truncated_prior"]


class TruncationConfig(BaseModel):
    """TSNPE's settings, and every truncated method's (``VectorFieldSettings`` extends it):
    the prior truncated to the posterior's highest-density region."""

    model_config = STRICT

    quantile: float = Field(
        1e-4,
        gt=0,
        lt=1,
        title="Truncation quantile",
        description="Mass of the posterior left outside the truncated region.",
    )
    num_samples_to_estimate: int = Field(
        10_000,
        ge=100,
        title="Samples to set the threshold",
        description="Posterior samples whose log-densities set the truncation threshold.",
    )


def density_threshold(posterior: Any, quantile: float, num_samples: int) -> float:
    """The log-density above which ``posterior`` holds ``1 - quantile`` of its mass.

    The same estimate as ``sbi.utils.get_density_thresholder`` (sorted log-probs of
    ``num_samples`` samples), returned as a number so the region can be stored and
    rebuilt exactly.
    """
    samples = posterior.sample((num_samples,), show_progress_bars=False)
    log_probs, _ = torch.sort(posterior.log_prob(samples))
    return float(log_probs[int(quantile * num_samples)])


def truncated_prior(prior: Distribution, posterior: Any, threshold: float) -> Any:
    """sbi's ``RestrictedPrior``: the prior where ``posterior.log_prob > threshold``."""
    from sbi.utils import RestrictedPrior

    def accept(theta: Tensor) -> Tensor:
        return posterior.log_prob(theta) > threshold

    return RestrictedPrior(prior, accept, posterior=posterior, sample_with="rejection")


class TSNPE(DirectMethod):
    """Truncated sequential NPE: plain NPE loss on all rounds, truncated-prior proposals."""

    name: ClassVar[str] = "tsnpe"
    #: NSF for the posterior estimators: on sbibm's two_moons at 10 x 100 simulations,
    #: SNPE's C2ST went from 0.81 (MAF) to 0.60 (NSF), TSNPE's from 0.73 to 0.65
    #: (observation 1; benchmarks/README.md).
    default_network: ClassVar[str] = "nsf"
    #: Spline flows fit a narrow, nearly Gaussian posterior poorly and slowly (NSF: 41% too
    #: wide with 3 x 1,000 of ``x = theta + 0.1 eps``, in sbi's own loop too, at 2-3x MAF's
    #: time); an affine flow fits it. Round 1 trains MAF first and NSF only where the
    #: posterior is not Gaussian-like (``sbi_rounds.stages.network_choice``).
    simple_network: ClassVar[str | None] = "maf"
    #: A continued flow stops early (21-50 epochs a round) near the previous round's optimum.
    #: On sbibm at 10 x 1,000 simulations (observations 1-2), fresh weights every round gave
    #: C2ST slcp 0.842/0.823 against 0.911/0.861 (published 0.866) and two_moons 0.508/0.550
    #: against 0.534/0.510 (published 0.536), at 3.4-4.8x the run time; at 10 x 100 it lost
    #: on two_moons (0.639 against 0.627 over observations 1-5), so smaller rounds continue
    #: (benchmarks/README.md, "How the defaults were chosen").
    scratch_from_simulations: ClassVar[int | None] = 2000
    settings_field: ClassVar[str | None] = "tsnpe"

    def loss_fn(self, settings: TruncationConfig, prior: Distribution, round_: int) -> LossFn:
        """The NPE loss in every round (truncated proposals need no correction)."""
        return npe_loss

    def proposal(
        self, settings: TruncationConfig, posterior: Any, prior: Distribution, round_: int
    ) -> Proposal:
        """The prior truncated to the previous posterior's ``1 - quantile`` HPD region, with
        the share of prior draws it keeps (``kept``; what its rejection costs)."""
        q = settings
        threshold = density_threshold(posterior, q.quantile, q.num_samples_to_estimate)
        kept = measure_truncation(prior, posterior, threshold)
        return Proposal(
            distribution=truncated_prior(prior, posterior, threshold),
            description={
                "kind": "truncated_prior",
                "round": round_ - 1,
                "log_prob_threshold": threshold,
                "quantile": q.quantile,
                "kept": kept.fraction,
            },
            acceptance=kept,
        )
