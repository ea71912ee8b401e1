"""Starting a run from simulations you have: they are its round 1, stored like simulated ones.

With ``start_from`` set, round 1 is planned with the imported pairs' count, its parameters
written by the ``sample`` stage and its simulations committed by the ``simulate`` stage (one
chunk, nothing run on Dask); from there the round is appended, checksummed, trained and
resumed as any other. The round's stored proposal says where they came from
(``{"kind": "prior", "imported": {...}}``, or ``kind: imported`` for another proposal) with
the source and the SHA-256 of the pairs, so a resume that would read a changed file stops.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from sbi_rounds.config import RunConfig, StartConfig
from sbi_rounds.store import RunFileError, RunStore, Stage

__all__ = ["ImportedSimulations", "commit_imported", "is_imported", "plan_imported", "read_start"]


@dataclass(frozen=True)
class ImportedSimulations:
    """Pairs to start from.

    Attributes:
        theta: Parameters ``(N, D)``, finite.
        x: Simulations ``(N, K)`` (rows with NaN or infinite values are kept, as invalid).
        from_prior: Whether they were drawn from the prior.
        description: What the round's stored proposal records of them (JSON).
    """

    theta: np.ndarray
    x: np.ndarray
    from_prior: bool
    description: dict[str, Any]


def _digest(theta: np.ndarray, x: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (theta, x):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return "sha256:" + h.hexdigest()


def _from_run_file(start: StartConfig) -> tuple[np.ndarray, np.ndarray, bool]:
    """Round ``start.round`` of another run's file, and whether it holds prior draws."""
    try:
        store = RunStore.open(start.simulations, durable=False)
        if start.round not in store.rounds() or store.stage(start.round) < Stage.SIMULATED:
            raise ValueError(
                f"start_from: {start.simulations} has no simulated round {start.round} "
                f"(its rounds: {store.rounds()})"
            )
        theta, x, _ = store.read_simulations(start.round)
        kind = store.round_info(start.round).proposal.get("kind")
    except RunFileError as e:  # DamagedRunError too
        raise ValueError(f"start_from: {e}") from None
    if start.drawn_from == "prior" and kind != "prior":
        raise ValueError(
            f"start_from.drawn_from=prior, but round {start.round} of {start.simulations} was "
            f"drawn from {kind!r} (its stored proposal); leave drawn_from as file"
        )
    return theta, x, kind == "prior"


def _arrays(start: StartConfig) -> tuple[np.ndarray, np.ndarray]:
    """``theta`` and ``x`` of a ``.npz`` or a plain ``.h5`` file."""
    path = Path(start.simulations)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as f:
            missing = [n for n in (start.theta, start.x) if n not in f.files]
            if missing:
                raise ValueError(f"start_from: {path} has no arrays {missing}; it holds {f.files}")
            return f[start.theta], f[start.x]
    with h5py.File(path, "r") as f:
        missing = [n for n in (start.theta, start.x) if n not in f]
        if missing:
            raise ValueError(
                f"start_from: {path} has no datasets {missing}; name them with start_from.theta "
                "and start_from.x"
            )
        return f[start.theta][()], f[start.x][()]


def _is_run_file(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return "format_version" in f.attrs


def read_start(config: RunConfig, prior: Any, theta_dim: int) -> ImportedSimulations:
    """The pairs of ``config.start_from``, checked against the run.

    Raises:
        ValueError: An unreadable file, wrong shapes, non-finite parameters, parameters
            declared prior draws outside the prior's support, or an origin the method's
            first-round loss cannot use; one line each.
    """
    start = config.start_from
    assert start is not None
    path = Path(start.simulations)
    if not path.is_file() or path.suffix.lower() not in (".npz", ".h5", ".hdf5"):
        raise ValueError(
            f"start_from.simulations={start.simulations!r} is not an existing .npz or .h5 file"
        )
    if path.suffix.lower() != ".npz" and _is_run_file(path):
        theta, x, from_prior = _from_run_file(start)
    elif start.drawn_from == "file":
        raise ValueError(
            f"start_from: {path} is not a run file, so it does not record where its "
            "parameters were drawn from; declare it: start_from.drawn_from prior (or other)"
        )
    else:
        theta, x = _arrays(start)
        from_prior = start.drawn_from == "prior"
    theta, x = np.asarray(theta, dtype=np.float64), np.asarray(x)
    k = len(config.xobs)
    if theta.ndim != 2 or x.ndim != 2 or theta.shape[1] != theta_dim or x.shape[1] != k:
        raise ValueError(
            f"start_from: parameters {theta.shape} and simulations {x.shape} must have shapes "
            f"(N, {theta_dim}) and (N, {k}) for this run's prior and xobs"
        )
    if len(theta) != len(x) or len(theta) < 2:
        raise ValueError(f"start_from: {len(theta)} parameter sets but {len(x)} simulations")
    if not np.isfinite(theta).all():
        raise ValueError("start_from: the parameters hold NaN or infinite values")
    if from_prior:
        log_p = prior.log_prob(torch.as_tensor(theta, dtype=torch.float32))
        outside = np.flatnonzero(~torch.isfinite(log_p).numpy())
        if len(outside):
            raise ValueError(
                f"start_from: parameter rows {outside[:5].tolist()} lie outside the prior's "
                "support, so they are not prior draws (check drawn_from and the prior)"
            )
    elif not _any_proposal(config):
        raise ValueError(
            f"start_from: {path} was not drawn from the prior; {config.method} trains its "
            "first round with a loss that is correct only for prior draws (use snle or snre)"
        )
    source = {"source": str(path), "round": start.round, "rows": len(theta)}
    description = {
        "kind": "prior" if from_prior else "imported",
        "imported": {**source, "sha256": _digest(theta, x)},
    }
    return ImportedSimulations(theta, x, from_prior, description)


def _any_proposal(config: RunConfig) -> bool:
    from sbi_rounds.methods import get_method

    return get_method(config.method).trains_on_any_proposal


def is_imported(proposal: dict[str, Any]) -> bool:
    """Whether a round's stored proposal describes imported simulations."""
    return "imported" in proposal


def plan_imported(run: Any, round_: int) -> dict[str, Any]:
    """Plan round ``round_`` (1) with the imported pairs and write their parameters."""
    store = run.store
    if store.stage(round_) is None:
        data = read_start(run.config, run.prior, run.theta_dim)
        n = len(data.theta)
        store.plan_round(
            round_,
            num_simulations=n,
            theta_dim=run.theta_dim,
            x_dim=len(run.config.xobs),
            chunk_size=n,
            num_posterior_samples=run.config.posterior_samples_for_round(round_),
            proposal=data.description,
            x_dtype=run.config.x_dtype,
        )
        store.write_theta(round_, 0, data.theta)
    info = store.round_info(round_)
    if info.theta_done < info.num_simulations:  # planned, then stopped before the write
        store.write_theta(round_, 0, read_start(run.config, run.prior, run.theta_dim).theta)
    return {"proposal": info.proposal, "simulations": info.num_simulations}


def commit_imported(run: Any, round_: int) -> int:
    """Commit the imported simulations of round ``round_`` (read again, checked unchanged);
    returns how many rows were imported."""
    store = run.store
    stored = store.round_info(round_).proposal["imported"]
    if store.pending_chunks(round_):
        data = read_start(run.config, run.prior, run.theta_dim)
        if data.description["imported"]["sha256"] != stored["sha256"]:
            raise ValueError(
                f"start_from: {stored['source']} changed since round {round_} was planned "
                "from it; restore it, or start a new run"
            )
        store.write_chunks(round_, [(0, data.x, 0.0)])
    return int(stored["rows"])
