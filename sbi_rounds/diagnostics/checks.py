"""Posterior checks as numbers: summaries, predictive checks, movement, stopping rule, C2ST."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbi_rounds.missing import valid_rows
from sbi_rounds.store.schema import Movement

__all__ = [
    "QUANTILES",
    "StopDecision",
    "c2st_sbibm",
    "movement",
    "posterior_statistics",
    "predictive_check",
    "stop_decision",
]

#: Posterior quantiles reported per parameter: (key, level).
QUANTILES = (("q05", 0.05), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q95", 0.95))


def _float(value: float) -> float | None:
    """A JSON-safe float: None for NaN and infinities."""
    value = float(value)
    return value if math.isfinite(value) else None


def posterior_statistics(
    samples: np.ndarray,
    names: Sequence[str],
    *,
    map_estimate: np.ndarray | None = None,
    true_parameters: Sequence[float] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Mean, standard deviation, quantiles and MAP of each parameter.

    Args:
        samples: Posterior samples at x_o, with shape ``(S, D)``.
        names: One name per parameter, ``D`` of them.
        map_estimate: The MAP estimate, with shape ``(D,)``; None: not computed.
        true_parameters: The true parameters, with shape ``(D,)``, when known; the
            summary then holds ``truth`` and ``truth_quantile`` (its marginal quantile
            under the posterior).

    Returns:
        ``{name: {"mean", "std", "q05", "q25", "median", "q75", "q95", "map"[, "truth",
        "truth_quantile"]}}``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != len(names) or len(samples) < 2:
        raise ValueError(
            f"need posterior samples of shape (S >= 2, {len(names)}), got {samples.shape}"
        )
    levels = [q for _, q in QUANTILES]
    quantiles = np.quantile(samples, levels, axis=0)
    out: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(names):
        column = samples[:, i]
        stats: dict[str, float | None] = {
            "mean": _float(column.mean()),
            "std": _float(column.std(ddof=1)),
            **{key: _float(quantiles[j, i]) for j, (key, _) in enumerate(QUANTILES)},
            "map": None if map_estimate is None else _float(np.asarray(map_estimate)[i]),
        }
        if true_parameters is not None:
            truth = float(true_parameters[i])
            stats["truth"] = truth
            stats["truth_quantile"] = _float(np.mean(column < truth))
        out[name] = stats
    return out


def predictive_check(
    x_predictive: np.ndarray,
    xobs: np.ndarray,
    names: Sequence[str],
    *,
    alpha: float,
) -> dict[str, Any]:
    """Where x_o falls in the posterior predictive distribution, per summary statistic.

    For each statistic ``k``, with ``X`` the valid (finite) predictive simulations:

    * ``quantile``: ``q = (#{X_k < x_o,k} + #{X_k = x_o,k} / 2) / n``, the predictive
      quantile of x_o (mid-rank for ties);
    * ``p_value``: ``2 min(q, 1 - q)``, two-sided: the predictive probability of a value
      at least as far out in the tails as x_o;
    * ``z``: ``(x_o,k - mean(X_k)) / sd(X_k)``, the standardized distance;
    * ``flagged``: ``p_value < alpha``, i.e. x_o lies outside the central ``1 - alpha``
      interval of the predictive distribution: the posterior does not reproduce it.

    The joint check compares the Mahalanobis distance of x_o from the predictive mean
    (covariance pseudo-inverse) with the distances of the predictive simulations
    themselves: ``p = (#{d_i >= d_o} + 1) / (n + 1)``, flagged when below ``alpha``.

    Args:
        x_predictive: Simulations from posterior samples, with shape ``(N, K)``; rows
            with a NaN or infinity are invalid and left out.
        xobs: The observation, with shape ``(K,)``.
        names: One name per statistic, ``K`` of them.
        alpha: The flagging level.

    Returns:
        ``{"simulations", "valid", "alpha", "statistics": {name: {...}}, "flagged":
        [names], "joint": {"distance", "p_value", "flagged"}}``.
    """
    x = np.asarray(x_predictive, dtype=np.float64)
    xobs = np.asarray(xobs, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != len(xobs) or len(names) != len(xobs):
        raise ValueError(
            f"predictive simulations must have shape (N, {len(xobs)}) with {len(xobs)} names, "
            f"got {x.shape} and {len(names)} names"
        )
    valid = valid_rows(x)
    xv = x[valid]
    n = len(xv)
    result: dict[str, Any] = {
        "simulations": int(len(x)),
        "valid": int(n),
        "alpha": alpha,
        "statistics": {},
        "flagged": [],
        "joint": None,
    }
    if n < 2:
        result["flagged"] = list(names)
        return result
    mean, std = xv.mean(axis=0), xv.std(axis=0, ddof=1)
    for k, name in enumerate(names):
        stats = _statistic_check(xv[:, k], xobs[k], mean[k], std[k], alpha)
        result["statistics"][name] = stats
        if stats["flagged"]:
            result["flagged"].append(name)
    centred = xv - mean
    precision = np.linalg.pinv(np.atleast_2d(np.cov(xv, rowvar=False)))
    d_sims = np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", centred, precision, centred), 0))
    d_obs = float(np.sqrt(max((xobs - mean) @ precision @ (xobs - mean), 0.0)))
    p_joint = float((np.sum(d_sims >= d_obs) + 1) / (n + 1))  # Monte Carlo p-value
    result["joint"] = {"distance": _float(d_obs), "p_value": p_joint, "flagged": p_joint < alpha}
    return result


def _statistic_check(
    column: np.ndarray, value: float, mean: float, std: float, alpha: float
) -> dict[str, Any]:
    """One statistic's predictive check (see :func:`predictive_check`)."""
    n = len(column)
    q = (np.sum(column < value) + 0.5 * np.sum(column == value)) / n
    p = 2.0 * min(q, 1.0 - q)
    if std > 0:
        z = (value - mean) / std
    else:
        z = 0.0 if value == mean else math.copysign(math.inf, value - mean)
    return {
        "xobs": float(value),
        "mean": _float(mean),
        "std": _float(std),
        "q05": _float(np.quantile(column, 0.05)),
        "q95": _float(np.quantile(column, 0.95)),
        "quantile": float(q),
        "p_value": float(p),
        "z": _float(z),
        "flagged": bool(p < alpha),
    }


def movement(
    previous: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """How the posterior moved from one round to the next, per parameter.

    ``mean_shift = (mean_r - mean_(r-1)) / sd_(r-1)`` (in units of the previous
    posterior's standard deviation) and ``width_ratio = sd_r / sd_(r-1)``.

    Args:
        previous: The previous round's summary, ``{name: {"mean", "std", ...}}``.
        current: This round's summary.

    Returns:
        ``{"parameters": {name: {"mean_shift", "width_ratio"}}, "max_mean_shift",
        "max_width_change"}`` with the largest ``|mean_shift|`` and ``|width_ratio - 1|``.
    """
    params: dict[str, dict[str, float | None]] = {}
    shifts, changes = [], []
    for name, now in current.items():
        before = previous.get(name)
        if before is None or not before.get("std"):
            params[name] = {"mean_shift": None, "width_ratio": None}
            shifts.append(math.inf)
            changes.append(math.inf)
            continue
        shift = (now["mean"] - before["mean"]) / before["std"]
        ratio = now["std"] / before["std"]
        params[name] = {"mean_shift": _float(shift), "width_ratio": _float(ratio)}
        shifts.append(abs(shift))
        changes.append(abs(ratio - 1.0))
    return {
        "parameters": params,
        "max_mean_shift": _float(max(shifts)) if shifts else None,
        "max_width_change": _float(max(changes)) if changes else None,
    }


@dataclass(frozen=True, kw_only=True)
class StopDecision:
    """Whether the stopping rule ends the run after a round, and why.

    Attributes:
        stop: True when ``stable_rounds`` successive rounds were stable.
        stable_rounds: Successive stable rounds ending at this one.
        reason: A sentence for the log and the report.
    """

    stop: bool
    stable_rounds: int
    reason: str


def stop_decision(
    movements: Sequence[Movement | None],
    *,
    mean_shift: float,
    width_change: float,
    rounds: int,
) -> StopDecision:
    """Apply the stopping rule to the movements of rounds ``1 .. r`` (round 1's is None).

    A round is stable when every parameter's mean moved by less than ``mean_shift``
    previous standard deviations and every width changed by less than ``width_change``
    (relative). The run stops after ``rounds`` stable rounds in a row.

    Args:
        movements: :func:`movement` results as stored (``RoundDiagnostics.movement``),
            one per round so far, oldest first.
        mean_shift: Largest ``|mean_shift|`` of a stable round.
        width_change: Largest ``|width_ratio - 1|`` of a stable round.
        rounds: Stable rounds in a row needed to stop.
    """
    count = 0
    for m in reversed(movements):
        if m is None or m.max_mean_shift is None or m.max_width_change is None:
            break
        if not (m.max_mean_shift < mean_shift and m.max_width_change < width_change):
            break
        count += 1
    last = movements[-1] if movements else None
    if count >= rounds and last is not None:
        assert last.max_mean_shift is not None and last.max_width_change is not None
        reason = (
            f"the posterior was stable for {count} round(s) in a row (at most "
            f"{mean_shift:g} sd mean shift and {width_change:.0%} width change; last round: "
            f"{last.max_mean_shift:.3g} sd and {last.max_width_change:.1%})"
        )
        return StopDecision(stop=True, stable_rounds=count, reason=reason)
    return StopDecision(
        stop=False,
        stable_rounds=count,
        reason=f"{count} of {rounds} stable round(s) in a row needed to stop",
    )


def c2st_sbibm(reference: np.ndarray, samples: np.ndarray, *, seed: int = 1) -> dict[str, Any]:
    """Classifier two-sample test accuracy between reference and posterior samples, as sbibm.

    sbibm's C2ST: an MLP classifier (two ReLU layers of ``10 D`` units, Adam, at most
    10000 iterations), 5-fold cross-validated accuracy, both sets z-scored with the
    reference's mean and standard deviation, seed 1. The sets are cut to the same size
    (the reference is subsampled at random with ``seed``). 0.5: indistinguishable;
    1.0: perfectly separable.

    Args:
        reference: Reference posterior samples, with shape ``(S_ref, D)``.
        samples: The posterior's samples, with shape ``(S, D)``.
        seed: Seed of the subsampling, the classifier and the folds.

    Returns:
        ``{"accuracy", "samples"}``: the accuracy and the samples per set it used.
    """
    import torch
    from sbi.utils.metrics import c2st

    reference = np.asarray(reference, dtype=np.float32)
    samples = np.asarray(samples, dtype=np.float32)
    if reference.ndim != 2 or samples.ndim != 2 or reference.shape[1] != samples.shape[1]:
        raise ValueError(
            f"reference samples {reference.shape} and posterior samples {samples.shape} must "
            "both have shape (S, D) with the same D"
        )
    n = min(len(reference), len(samples))
    if n < 10:
        raise ValueError(f"C2ST needs at least 10 samples per set, got {n}")
    rng = np.random.default_rng(seed)
    ref = reference[rng.permutation(len(reference))[:n]]
    dim = reference.shape[1]
    accuracy = c2st(
        torch.from_numpy(ref),
        torch.from_numpy(samples[:n]),
        seed=seed,
        n_folds=5,
        classifier="mlp",
        classifier_kwargs={
            "activation": "relu",
            "hidden_layer_sizes": (10 * dim, 10 * dim),
            "max_iter": 10000,
            "solver": "adam",
        },
        z_score=True,
    )
    return {"accuracy": float(accuracy), "samples": int(n)}
