"""Calibration of an amortized estimator: SBC ranks and expected coverage with sbi's tools."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sbi_rounds.missing import valid_rows
from sbi_rounds.seeding import seeded

__all__ = ["COVERAGE_LEVELS", "calibrate", "coverage_curve"]

#: Credibility levels at which expected coverage is reported.
COVERAGE_LEVELS = tuple(round(0.05 * i, 2) for i in range(21))


#: sbi's notes during calibration that say nothing about the estimator.
_NOT_WORTH_A_WARNING = ("Capping max_sampling_batch_size",)


def _warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The first lines of the warnings sbi raised, but for :data:`_NOT_WORTH_A_WARNING`."""
    lines = {str(w.message).splitlines()[0] for w in caught}
    return sorted(line for line in lines if not line.startswith(_NOT_WORTH_A_WARNING))


def _marginal(i: int) -> Callable[[Tensor, Tensor], Tensor]:
    def reduce(theta: Tensor, x: Tensor) -> Tensor:
        return theta[:, i]

    return reduce


def _negative_potential(posterior: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """``-log p(theta | x)`` up to a constant per x: ranks samples by density."""

    def reduce(theta: Tensor, x: Tensor) -> Tensor:
        return -posterior.potential(theta, x=x)

    return reduce


def coverage_curve(ranks: np.ndarray, num_posterior_samples: int) -> list[float]:
    """Expected coverage at :data:`COVERAGE_LEVELS` from density ranks.

    Args:
        ranks: Per test simulation, the number of posterior samples with a higher
            density than the true parameters, with shape ``(N,)``.
        num_posterior_samples: Posterior samples per test simulation, ``M``.

    Returns:
        For each level ``a``, the fraction of test simulations whose true parameters lie
        inside the posterior's ``a`` highest-density region, ``rank < a (M + 1)`` (ranks
        of a calibrated posterior are uniform on ``0 .. M``): ``a`` for a calibrated
        posterior, less for an overconfident one, more for an underconfident one.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    bins = num_posterior_samples + 1
    return [float(np.mean(ranks < level * bins)) for level in COVERAGE_LEVELS]


def _tarp(theta: Tensor, x: Tensor, posterior: Any, num_posterior_samples: int) -> dict[str, float]:
    """TARP's area to the diagonal and KS p-value (``sbi.diagnostics.run_tarp`` and
    ``check_tarp``) for test parameters ``theta (N, D)`` and their simulations ``x (N, K)``."""
    from sbi.diagnostics import check_tarp, run_tarp

    ecp, alpha = run_tarp(
        theta, x, posterior, num_posterior_samples=num_posterior_samples, show_progress_bar=False
    )
    atc, p_value = check_tarp(ecp, alpha)
    return {"atc": float(atc), "ks_p_value": float(p_value)}


def _uniform_ks_p_value(ranks: np.ndarray, num_posterior_samples: int) -> float:
    """KS p-value of ranks ``(N,)`` against uniform ones on ``0 .. M`` (as sbi's
    ``check_sbc`` computes its ``ks_pvals``)."""
    from scipy.stats import kstest, uniform

    return float(kstest(ranks, uniform(loc=0, scale=num_posterior_samples).cdf)[1])


def _rank_summary(
    ranks: np.ndarray,
    classifiers: dict[str, Any] | None,
    names: Sequence[str],
    num_posterior_samples: int,
) -> dict[str, Any]:
    """Per-parameter SBC results, rank histograms and the coverage curve, from the ranks
    ``(N, D + 1)`` (the last column the density ranks) and, when run, the classifier tests
    of sbi's ``check_sbc`` (``c2st_ranks``, ``c2st_dap``)."""
    dim = len(names)
    bins = int(min(20, max(5, len(ranks) // 10)))
    edges = np.linspace(0, num_posterior_samples, bins + 1)
    parameters = {}
    for i, name in enumerate(names):
        parameters[name] = {
            "ks_p_value": _uniform_ks_p_value(ranks[:, i], num_posterior_samples),
            "rank_histogram": np.histogram(ranks[:, i], bins=edges)[0].tolist(),
        }
        if classifiers is not None:
            parameters[name]["c2st_ranks"] = float(classifiers["c2st_ranks"][i])
            parameters[name]["c2st_dap"] = float(classifiers["c2st_dap"][i])
    return {
        "parameters": parameters,
        "rank_bins": edges.tolist(),
        "coverage": {
            "levels": list(COVERAGE_LEVELS),
            "values": coverage_curve(ranks[:, dim], num_posterior_samples),
            "ks_p_value": _uniform_ks_p_value(ranks[:, dim], num_posterior_samples),
        },
    }


def calibrate(
    posterior: Any,
    theta: np.ndarray,
    x: np.ndarray,
    names: Sequence[str],
    *,
    num_posterior_samples: int,
    seed: int,
    classifiers: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """Simulation-based calibration and expected coverage of an amortized posterior.

    Runs ``sbi.diagnostics.run_sbc`` once with ``D + 1`` reductions: the ``D`` marginals
    (SBC, Talts et al. 2018) and the posterior density (expected coverage, Deistler et
    al. 2022), KS tests of the marginal and density ranks against uniform ones (as
    ``sbi.diagnostics.check_sbc`` computes them), with ``classifiers`` also ``check_sbc``'s
    C2ST tests (cross-validated random forests: seconds per parameter); and TARP
    (Lemos et al. 2023: ``sbi.diagnostics.run_tarp`` and ``check_tarp``), which checks the
    joint posterior's coverage with random reference points. Test simulations with a NaN
    or infinity are left out.

    Args:
        posterior: An sbi posterior of an amortized estimator (any x), with ``sample_batched``
            (or ``sample``) and ``potential``.
        theta: Test parameters drawn from the prior, with shape ``(N, D)``.
        x: Their simulations, with shape ``(N, K)``.
        names: One name per parameter.
        num_posterior_samples: Posterior samples per test simulation, ``M``.
        seed: Seeds the posterior sampling and the checks' classifiers.
        classifiers: Also run ``check_sbc``'s classifier tests.

    Returns:
        ``(result, ranks)``: ``result`` holds per parameter the KS p-value of rank
        uniformity, with ``classifiers`` the C2ST accuracy of ranks vs uniform and of prior
        vs data-averaged posterior, rank histograms, the coverage curve, TARP's ``atc`` and
        KS p-value and sbi's warnings; ``ranks`` has shape ``(N_valid, D + 1)``, the last column the
        density ranks.
    """
    from sbi.diagnostics import check_sbc, run_sbc

    theta_t = torch.as_tensor(np.asarray(theta), dtype=torch.float32)
    x_t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    valid = torch.from_numpy(valid_rows(x_t.numpy()))
    theta_t, x_t = theta_t[valid], x_t[valid]
    n, dim = theta_t.shape
    if n < 2:
        raise ValueError(f"calibration needs at least 2 valid test simulations, got {n}")
    reduce_fns = [_marginal(i) for i in range(dim)] + [_negative_potential(posterior)]
    with warnings.catch_warnings(record=True) as caught, seeded(seed):
        warnings.simplefilter("always")
        ranks, dap = run_sbc(
            theta_t,
            x_t,
            posterior,
            num_posterior_samples=num_posterior_samples,
            reduce_fns=reduce_fns,
            show_progress_bar=False,
        )
        checks = (
            check_sbc(ranks[:, :dim], theta_t, dap, num_posterior_samples) if classifiers else None
        )
        tarp = _tarp(theta_t, x_t, posterior, num_posterior_samples)
    ranks_np = ranks.numpy()
    result = {
        "test_simulations": int(len(valid)),
        "valid": int(n),
        "posterior_samples": int(num_posterior_samples),
        **_rank_summary(ranks_np, checks, names, num_posterior_samples),
        "tarp": tarp,
        "warnings": _warnings(caught),
    }
    return result, ranks_np
