"""The per-round stages. Each reads the store, skips what is done and commits its result.

A round runs ``sample_proposal -> simulate -> append_simulations -> train ->
build_posterior -> checkpoint``, then ``diagnose`` checks the finished round (see
``sbi_rounds.diagnostics``). Every function here is idempotent and usable without
Prefect; ``tasks/`` wraps them as Prefect tasks and ``flows/online.py`` chains them.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution

from sbi_rounds.config import IDENTITY_FIELDS, RunConfig, config_differences
from sbi_rounds.locking import RunLock
from sbi_rounds.methods import Method, get_method, training_tensors
from sbi_rounds.networks import build_network, load_network, network_settings
from sbi_rounds.priors import build_prior
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.simulation import (
    SimulatorError,
    call_simulator,
    choose_chunk_size,
    measure_seconds_per_simulation,
    simulate_round,
)
from sbi_rounds.stall import (
    StallCheck,
    chance_losses,
    check_stall,
    gaussian_baseline_losses,
    validation_losses,
)
from sbi_rounds.store import RunStore, Stage
from sbi_rounds.training import (
    Callback,
    CheckpointCallback,
    TrainingSummary,
    run_training,
    split_train_val,
)

__all__ = [
    "ConfigMismatchError",
    "InvalidRoundError",
    "Run",
    "RunInterrupted",
    "StageResult",
    "append_simulations",
    "build_posterior",
    "checkpoint",
    "diagnose",
    "open_run",
    "posterior_for_round",
    "preflight",
    "run_session",
    "sample_proposal",
    "simulate",
    "train",
]

log = logging.getLogger(__name__)


class ConfigMismatchError(ValueError):
    """Resuming with settings that change what the run computes."""


class InvalidRoundError(RuntimeError):
    """Too few valid simulations in a round."""


class RunInterrupted(KeyboardInterrupt):
    """The run was asked to stop (Ctrl-C, SIGTERM, a Prefect cancellation)."""


@dataclass(frozen=True)
class Run:
    """The resolved inputs of a run: settings, store, prior, method and observation."""

    config: RunConfig
    store: RunStore
    prior: Distribution
    method: Method
    xobs: torch.Tensor  # (K,)
    theta_dim: int

    @property
    def directory(self) -> Path:
        """The run's directory (holds run.h5, the lock and the figures)."""
        return self.store.path.parent


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What a stage did."""

    round: int
    stage: str
    skipped: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def _resolve(config: RunConfig, store: RunStore) -> Run:
    prior = build_prior(config.prior)
    theta_dim = int(prior.sample((1,)).shape[-1])
    if config.parameter_names is not None and len(config.parameter_names) != theta_dim:
        raise ValueError(
            f"parameter_names has {len(config.parameter_names)} names but the prior has "
            f"{theta_dim} parameters"
        )
    xobs = torch.tensor(config.xobs, dtype=torch.float32)
    return Run(
        config=config,
        store=store,
        prior=prior,
        method=get_method(config.method),
        xobs=xobs,
        theta_dim=theta_dim,
    )


def _check_simulator(config: RunConfig, prior: Distribution) -> None:
    """Simulate two prior draws locally: catches import errors and wrong shapes early."""
    cfg = config
    with seeded(derive_seed(cfg.seed, 0, "probe")):
        theta = prior.sample((2,)).numpy()
    try:
        call_simulator(cfg.simulator, theta, derive_seed(cfg.seed, 0, "probe"), x_dim=len(cfg.xobs))
    except SimulatorError as e:
        first = str(e).split("\nTraceback")[0]
        raise ValueError(f"the simulator failed a check on 2 prior samples: {first}") from None


def open_run(
    config: RunConfig, *, allow_changes: Sequence[str] = (), check_simulator: bool = True
) -> Run:
    """Create the run file, or open it and check the settings still match.

    Settings in :data:`~sbi_rounds.config.IDENTITY_FIELDS` must match the file's unless
    named in ``allow_changes``; other changes (more rounds, training, cluster) are
    accepted and recorded in the file's ``config_history``.

    Raises:
        ConfigMismatchError: Identity settings differ; nothing in the file was touched.
    """
    bad = [f for f in allow_changes if f not in IDENTITY_FIELDS]
    if bad:
        raise ValueError(f"allow_changes names {bad}; allowed: {list(IDENTITY_FIELDS)}")
    path = config.run_path
    new = config.model_dump(mode="json")
    if not path.exists():
        store = RunStore.create(path, config=new, fingerprint=config.fingerprint())
        try:
            run = _resolve(config, store)
            if check_simulator:
                _check_simulator(config, run.prior)
        except ValueError:
            path.unlink(missing_ok=True)  # a bad prior or simulator leaves no run behind
            raise
        return run
    store = RunStore.open(path)
    old = store.read_config()
    _refuse_identity_changes(path, old, new, allow_changes)
    changes = [c for c in config_differences(old, new) if c.split(".")[0] != "run_id"]
    if changes:
        log.info("settings changed since the last session: %s", "; ".join(changes))
        store.update_config(new, changes)
    return _resolve(config, store)


def preflight(config: RunConfig, *, allow_changes: Sequence[str] = ()) -> None:
    """Find, writing nothing, what would stop :func:`run_session` as the run starts.

    Checks the lock's holder, the run file (readable, an sbi-rounds run, a format version
    this code reads) and its identity settings; for a new run, the prior and the simulator
    on two prior draws. The command line calls it before Prefect and Dask start, so bad
    input fails within a second, with one line.

    Raises:
        RunLockedError: Another live process holds the run.
        RunFileError: The run file cannot be used.
        ConfigMismatchError: Identity settings differ from the file's.
        ValueError: A bad prior or simulator (new runs).
    """
    path = config.run_path
    RunLock(path.parent / "run.lock").check()
    if path.exists():
        store = RunStore.open(path)
        _refuse_identity_changes(
            path, store.read_config(), config.model_dump(mode="json"), allow_changes
        )
        return
    _check_simulator(config, build_prior(config.prior))


def _refuse_identity_changes(
    path: Path, old: dict[str, Any], new: dict[str, Any], allow_changes: Sequence[str]
) -> None:
    identity_changes = [
        line
        for k in IDENTITY_FIELDS
        if k not in allow_changes
        for line in config_differences({k: old.get(k)}, {k: new[k]})
    ]
    if identity_changes:
        raise ConfigMismatchError(
            f"run {path.parent.name} was started with other settings:\n  "
            + "\n  ".join(identity_changes)
            + "\nNothing in the run file was changed. Either start a new run (add "
            "--run-id NEW_ID, or drop --run-id to get an id from the settings), or, if the "
            "change does not alter the results so far (e.g. a renamed simulator module), "
            "rerun with --allow-change "
            + " --allow-change ".join(
                sorted({c.split(".")[0].split(":")[0] for c in identity_changes})
            )
        )


@contextmanager
def run_session(
    config: RunConfig, *, allow_changes: Sequence[str] = (), check_simulator: bool = True
) -> Iterator[Run]:
    """Lock the run, clean up after killed commits, open it, and release the lock at exit."""
    directory = config.run_path.parent
    with RunLock(directory / "run.lock") as lock:
        if lock.previous_holder and lock.previous_holder.get("pid"):
            log.warning(
                "took over the run from a process that ended without releasing it: %s",
                lock.previous_holder,
            )
        for stale in RunStore(config.run_path).remove_stale_temporaries():
            log.info("removed %s left by an interrupted commit", stale.name)
        yield open_run(config, allow_changes=allow_changes, check_simulator=check_simulator)


# --- helpers ----------------------------------------------------------------------------
def _draw(distribution: Any, n: int) -> torch.Tensor:
    """``distribution.sample((n,))``, quietly where the sampler takes that option."""
    sample = distribution.sample
    try:
        quiet = "show_progress_bars" in inspect.signature(sample).parameters
    except (TypeError, ValueError):
        quiet = False
    out = sample((n,), show_progress_bars=False) if quiet else sample((n,))
    return out.reshape(n, -1).float()


def _reference_data(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Round 1's valid simulations: what every network is (re)built from."""
    theta, x, valid = run.store.read_simulations(1)
    return torch.from_numpy(theta[valid]).float(), torch.from_numpy(x[valid]).float()


def network_for_round(run: Run, round_: int) -> nn.Module:
    """Rebuild the network trained in ``round_`` from the run file (no pickle)."""
    weights, settings = run.store.read_network(round_)
    theta, x = _reference_data(run)
    return load_network(settings, weights, theta, x)


def posterior_for_round(run: Run, round_: int) -> Any:
    """The sbi posterior of ``round_``'s network with ``xobs`` as its default x."""
    return run.method.posterior(run.config, network_for_round(run, round_), run.prior, run.xobs)


def _timed(run: Run, round_: int, name: str, seconds: float, commit_before: float) -> None:
    """Record a stage's wall time, and the time its commits took, in the round's timings."""
    run.store.record_timing(round_, name, seconds)
    run.store.record_timing(round_, "commit", run.store.commit_seconds - commit_before)


def _skip(round_: int, name: str) -> StageResult:
    return StageResult(round=round_, stage=name, skipped=True, seconds=0.0)


# --- the stages -------------------------------------------------------------------------
def sample_proposal(run: Run, round_: int) -> StageResult:
    """Draw the round's parameters from its proposal and commit them in batches.

    Round 1 draws from the prior; later rounds from the method's proposal built from the
    previous round's posterior at xobs. Where the proposal is that posterior (SNPE, SNLE,
    SNRE), the posterior samples the previous round stored are used first and only the rest
    is drawn. Batches are committed as they come, so an interrupted (MCMC) sampling resumes
    from the last committed batch.
    """
    store, cfg = run.store, run.config
    stage = store.stage(round_)
    if stage is not None and stage >= Stage.SAMPLED:
        return _skip(round_, "sample")
    t0, c0 = time.perf_counter(), run.store.commit_seconds
    if round_ > 1 and store.stage(round_ - 1) != Stage.DONE:
        raise RuntimeError(f"round {round_ - 1} is not finished; finish it before round {round_}")
    with seeded(derive_seed(cfg.seed, round_, "sample", 0)):
        if round_ == 1:
            distribution, description = run.prior, {"kind": "prior"}
        else:
            posterior = posterior_for_round(run, round_ - 1)
            proposal = run.method.proposal(cfg, posterior, run.prior, round_)
            distribution, description = proposal.distribution, proposal.description
    n = cfg.simulations_for_round(round_)
    if stage is None:
        measured = None
        if cfg.cluster.chunk_size == "measure":
            if round_ > 1:
                measured = store.read_round_attr(round_ - 1, "seconds_per_simulation")
            if measured is None:  # round 1: time the simulator on a few prior draws, here
                probe_seed = derive_seed(cfg.seed, round_, "probe")
                with seeded(probe_seed):
                    probe = _draw(run.prior, 64).numpy()
                measured = measure_seconds_per_simulation(
                    cfg.simulator, probe, x_dim=len(cfg.xobs), seed=probe_seed,
                    budget=min(2.0, cfg.cluster.chunk_seconds),
                )
        store.plan_round(
            round_,
            num_simulations=n,
            theta_dim=run.theta_dim,
            x_dim=len(cfg.xobs),
            chunk_size=choose_chunk_size(cfg.cluster, n, measured),
            num_posterior_samples=cfg.posterior.num_samples,
            proposal=description,
        )
    info = store.round_info(round_)
    n = info.num_simulations
    # The previous round's posterior samples at xobs are draws from this proposal already:
    # take them first (they cost an MCMC run for SNLE/SNRE) and draw only the rest.
    reuse = 0
    if description["kind"] == "posterior":
        previous = store.read_samples(round_ - 1)
        reuse = min(len(previous), n)
        if info.theta_done < reuse:
            store.write_theta(round_, 0, previous[:reuse])
    batches = 1 if cfg.posterior_sampler == "direct" or round_ == 1 else cfg.posterior.batches
    per_batch = max(1, math.ceil((n - reuse) / batches))
    for b in range(max(0, info.theta_done - reuse) // per_batch, batches):
        start = reuse + b * per_batch
        count = min(per_batch, n - start)
        if count <= 0:
            break
        with seeded(derive_seed(cfg.seed, round_, "sample", b + 1)):
            theta = _draw(distribution, count)
        store.write_theta(round_, start, theta.numpy())
    store.set_stage(round_, Stage.SAMPLED)
    seconds = time.perf_counter() - t0
    _timed(run, round_, "sample", seconds, c0)
    return StageResult(
        round=round_,
        stage="sample",
        skipped=False,
        seconds=seconds,
        details={"proposal": description, "simulations": n},
    )


def simulate(
    run: Run,
    round_: int,
    client: Any,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> StageResult:
    """Simulate the round's uncommitted chunks on Dask (see ``simulate_round``)."""
    store, cfg = run.store, run.config
    if store.stage(round_) >= Stage.SIMULATED:
        return _skip(round_, "simulate")
    t0, c0 = time.perf_counter(), run.store.commit_seconds
    with store.held_open():  # one open file for the round's many chunk commits
        report = simulate_round(
            store,
            round_,
            simulator=cfg.simulator,
            cluster=cfg.cluster,
            client=client,
            run_seed=cfg.seed,
            progress=progress,
            should_stop=should_stop,
        )
    seconds = time.perf_counter() - t0
    _timed(run, round_, "simulate", seconds, c0)
    if report.stopped:
        raise RunInterrupted(f"stopped while simulating round {round_}")
    store.set_stage(round_, Stage.SIMULATED)
    return StageResult(
        round=round_,
        stage="simulate",
        skipped=False,
        seconds=seconds,
        details={
            "chunks_run": report.chunks_run,
            "chunks_skipped": report.chunks_skipped,
            "simulations_run": report.simulations_run,
            "retries": report.retries,
        },
    )


def append_simulations(run: Run, round_: int) -> StageResult:
    """Count valid simulations, enforce ``min_valid_fraction`` and add the round to training.

    Invalid rows (NaN or infinite summaries) stay in the file, marked, and are left out of
    training.
    """
    store, cfg = run.store, run.config
    if store.stage(round_) >= Stage.APPENDED:
        return _skip(round_, "append")
    t0, c0 = time.perf_counter(), run.store.commit_seconds
    _, _, valid = store.read_simulations(round_)
    n, n_valid = len(valid), int(valid.sum())
    store.set_counts(round_, n, n_valid)
    fraction = n_valid / n
    if fraction < cfg.cluster.min_valid_fraction:
        raise InvalidRoundError(
            f"round {round_}: only {n_valid} of {n} simulations ({fraction:.1%}) are valid "
            f"(finite); the minimum is cluster.min_valid_fraction="
            f"{cfg.cluster.min_valid_fraction}. The invalid rows are kept in {store.path} "
            f"(rounds/{round_:04d}/valid). Fix the simulator or the prior, or lower the "
            "threshold (--min-valid-fraction) and rerun the same command to continue."
        )
    if n_valid < n:
        log.warning(
            "round %d: %d of %d simulations are invalid and left out of training",
            round_,
            n - n_valid,
            n,
        )
    chunk_seconds = store.chunk_seconds(round_)
    info = store.round_info(round_)
    per_sim = float(np.nansum(chunk_seconds) / info.num_simulations)
    store.write_round_attrs(round_, seconds_per_simulation=per_sim)
    store.set_stage(round_, Stage.APPENDED)
    seconds = time.perf_counter() - t0
    _timed(run, round_, "append", seconds, c0)
    return StageResult(
        round=round_,
        stage="append",
        skipped=False,
        seconds=seconds,
        details={"simulations": n, "valid": n_valid},
    )


def _training_data(run: Run, round_: int) -> tuple[torch.Tensor, ...]:
    thetas, xs, rounds = [], [], []
    for r in range(1, round_ + 1):
        theta, x, valid = run.store.read_simulations(r)
        thetas.append(torch.from_numpy(theta[valid]))
        xs.append(torch.from_numpy(x[valid]))
        rounds.append(r)
    return training_tensors(thetas, xs, rounds).tensors()


def train(run: Run, round_: int, callbacks: Sequence[Callback] = ()) -> StageResult:
    """Train the round's network on every round's valid data through ``run_training``.

    Round 1 (or ``retrain_from_scratch``) builds a fresh network; later rounds continue
    from the previous round's weights, as sbi does. Checkpoints go into the run file every
    ``training.checkpoint_every`` epochs (at most once per ``checkpoint_min_seconds``), and
    an interrupted training resumes from them.

    A training that stalled (see ``sbi_rounds.stall``) is repeated from fresh weights with
    a new seed, up to ``stall.max_retrains`` times; every attempt is recorded in the run file
    (``RunStore.training_attempts``) and the best network is kept.
    """
    store, cfg = run.store, run.config
    if store.stage(round_) >= Stage.TRAINED:
        return _skip(round_, "train")
    t0, c0 = time.perf_counter(), run.store.commit_seconds
    data = _training_data(run, round_)
    loss_fn = run.method.loss_fn(cfg, run.prior, round_)
    attempts = store.training_attempts(round_)
    while not attempts or (
        attempts[-1]["stalled"]
        and not attempts[-1]["capped"]
        and len(attempts) <= cfg.stall.max_retrains
    ):
        attempt = len(attempts)
        if attempt:
            log.warning(
                "round %d: the training %s; training again from fresh weights with a new "
                "seed (attempt %d of at most %d)",
                round_,
                _stall_text(attempts[-1]),
                attempt + 1,
                cfg.stall.max_retrains + 1,
            )
        record, network = _train_attempt(run, round_, attempt, data, loss_fn, callbacks)
        stored = [a for a in attempts if a.get("kept")]
        keep = not record["stalled"] or not stored or record["excess"] < stored[-1]["excess"]
        record["kept"] = keep
        store.finish_training_attempt(round_, record, network if keep else None)
        attempts.append(record)
    kept = [a for a in attempts if a.get("kept")][-1]
    if kept["stalled"] and kept["capped"]:
        log.warning(
            "round %d: the training %s when it was cut short: %s. Training again would stop "
            "at the same limit; raise it to train the network fully",
            round_,
            _stall_text(kept),
            kept["stop_reason"],
        )
    elif kept["stalled"]:
        log.warning(
            "round %d: every one of %d trainings stalled; kept attempt %d, whose %s. Check "
            "the network and training settings (or raise stall.margin if the reference is "
            "too strict for this problem)",
            round_,
            len(attempts),
            kept["attempt"] + 1,
            _stall_text(kept),
        )
    store.set_stage(round_, Stage.TRAINED)
    seconds = time.perf_counter() - t0
    _timed(run, round_, "train", seconds, c0)
    summary = store.training_summary(round_)
    return StageResult(
        round=round_,
        stage="train",
        skipped=False,
        seconds=seconds,
        details={
            "epochs": summary["epochs"],
            "best_val_loss": summary["best_val_loss"],
            "stop_reason": summary["stop_reason"],
            "resumed_from_epoch": summary["resumed_from_epoch"],
            "retrains": len(attempts) - 1,
            "stalled": kept["stalled"],
        },
    )


def _stall_text(record: dict[str, Any]) -> str:
    return (
        f"{'stalled' if record['stalled'] else 'trained'} (validation loss "
        f"{record['loss']:.3f} vs {record['reference_loss']:.3f} of the "
        f"{record['reference'].replace('_', ' ')} reference)"
    )


def _architecture(run: Run) -> dict[str, Any]:
    """The run's network settings: round 1's stored ones once it trained (so a run keeps
    the architecture it started with, whatever the defaults of a later version), else the
    config's."""
    if run.store.rounds() and run.store.has_network(1):
        return run.store.read_network(1)[1]
    return network_settings(run.config)


def _train_attempt(
    run: Run,
    round_: int,
    attempt: int,
    data: tuple[torch.Tensor, ...],
    loss_fn: Any,
    callbacks: Sequence[Callback],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train attempt ``attempt`` (0: the usual training) and check it for a stall.

    Returns:
        ``(record, network)``: the attempt's record (stall check, seed, epochs) and the
        ``write_network`` keywords of its network.
    """
    store, cfg = run.store, run.config
    keys = ("train",) if attempt == 0 else ("train", attempt)
    train_seed = derive_seed(cfg.seed, round_, *keys) % 2**63
    tcfg = cfg.training.model_copy(update={"seed": train_seed % 2**31})
    settings = _architecture(run)
    fresh = round_ == 1 or tcfg.retrain_from_scratch or attempt > 0
    with seeded(train_seed):
        net = build_network(settings, data[0], data[1]) if fresh else network_for_round(
            run, round_ - 1
        )
    train_rows, val_rows = split_train_val(data, tcfg.validation_fraction, tcfg.seed)
    all_callbacks: list[Callback] = list(callbacks)
    if tcfg.checkpoint_every > 0:
        all_callbacks.insert(
            0,
            CheckpointCallback(
                store.checkpoint_sink(round_),
                every=tcfg.checkpoint_every,
                resume=tcfg.resume,
                min_seconds=tcfg.checkpoint_min_seconds,
            ),
        )
    summary: TrainingSummary = run_training(
        tcfg, net, loss_fn, train_rows, val_rows, callbacks=all_callbacks, round=round_
    )
    net.cpu()
    check = _stall_check(run, round_, net, loss_fn, settings["role"], train_rows, val_rows,
                         derive_seed(cfg.seed, round_, "split", attempt))
    record = {"attempt": attempt, "seed": train_seed, "epochs": summary.epochs,
              "stop_reason": summary.stop_reason, "capped": summary.limit_reached is not None,
              **check.record()}
    network = {
        "weights": net.state_dict(),
        "architecture": settings,
        "history": summary.history,
        "summary": {
            "epochs": summary.epochs,
            "steps": summary.steps,
            "best_val_loss": summary.best_val_loss,
            "best_epoch": summary.best_epoch,
            "stop_reason": summary.stop_reason,
            "elapsed": summary.elapsed,
            "resumed_from_epoch": summary.resumed_from_epoch,
            "limit_reached": summary.limit_reached,
            "batch_size": summary.batch_size,
            "training_samples": int(data[0].shape[0]),
            "attempt": attempt,
            "stall_check": check.record(),
        },
    }
    return record, network


def _stall_check(
    run: Run,
    round_: int,
    net: nn.Module,
    loss_fn: Any,
    role: str,
    train_rows: tuple[torch.Tensor, ...],
    val_rows: tuple[torch.Tensor, ...],
    seed: int,
) -> StallCheck:
    """Compare ``net``'s validation losses with the reference ``sbi_rounds.stall`` names."""
    losses = validation_losses(net, loss_fn, val_rows, seed)
    if round_ > 1:
        previous = network_for_round(run, round_ - 1)
        reference, kind = validation_losses(previous, loss_fn, val_rows, seed), "previous_round"
    elif role == "classifier":
        reference, kind = chance_losses(loss_fn, val_rows, seed), "chance"
    else:
        theta, x = train_rows[0], train_rows[1]
        target, cond = (theta, x) if role == "posterior" else (x, theta)
        val_target, val_cond = (
            (val_rows[0], val_rows[1]) if role == "posterior" else (val_rows[1], val_rows[0])
        )
        reference = gaussian_baseline_losses(target, cond, val_target, val_cond)
        kind = "gaussian"
    dims = {"posterior": train_rows[0].shape[1], "likelihood": train_rows[1].shape[1]}
    return check_stall(losses, reference, kind, run.config.stall, dims.get(role, 1))


def build_posterior(run: Run, round_: int) -> StageResult:
    """Build the round's posterior at xobs and commit its samples batch by batch."""
    store, cfg = run.store, run.config
    if store.stage(round_) >= Stage.POSTERIOR:
        return _skip(round_, "posterior")
    t0, c0 = time.perf_counter(), run.store.commit_seconds
    posterior = posterior_for_round(run, round_)
    info = store.round_info(round_)
    s = info.num_posterior_samples
    batches = 1 if cfg.posterior_sampler == "direct" else cfg.posterior.batches
    per_batch = math.ceil(s / batches)
    for b in range(info.samples_done // per_batch, batches):
        start = b * per_batch
        count = min(per_batch, s - start)
        if count <= 0:
            break
        with seeded(derive_seed(cfg.seed, round_, "posterior", b)):
            samples = _draw(posterior, count)
        store.write_samples(round_, start, samples.numpy())
    store.set_stage(round_, Stage.POSTERIOR)
    seconds = time.perf_counter() - t0
    _timed(run, round_, "posterior", seconds, c0)
    return StageResult(
        round=round_, stage="posterior", skipped=False, seconds=seconds, details={"samples": s}
    )


def posterior_summary(samples: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and 5/50/95% quantiles per parameter of ``samples (S, D)``."""
    q = np.quantile(samples, [0.05, 0.5, 0.95], axis=0)
    return {
        name: {
            "mean": float(samples[:, i].mean()),
            "std": float(samples[:, i].std(ddof=1)),
            "q05": float(q[0, i]),
            "median": float(q[1, i]),
            "q95": float(q[2, i]),
        }
        for i, name in enumerate(names)
    }


def parameter_names(run: Run) -> list[str]:
    """The configured parameter names, or ``theta_1 .. theta_D``."""
    return run.config.parameter_names or [f"theta_{i + 1}" for i in range(run.theta_dim)]


def checkpoint(run: Run, round_: int, *, pairplot: bool = True) -> StageResult:
    """Finish the round: posterior summary, pairplot PNG, timings, and the DONE mark."""
    store = run.store
    if store.stage(round_) >= Stage.DONE:
        return _skip(round_, "checkpoint")
    t0, c0 = time.perf_counter(), run.store.commit_seconds
    samples = store.read_samples(round_)
    names = parameter_names(run)
    summary = posterior_summary(samples, names)
    figure = None
    if pairplot:
        from sbi_rounds.diagnostics import save_pairplot

        figure = save_pairplot(
            samples,
            names,
            run.directory / f"round_{round_:03d}_pairplot.png",
            limits=_prior_limits(run),
            points=run.config.diagnostics.true_parameters,
            title=f"round {round_}",
        )
    store.write_round_attrs(
        round_, posterior_summary=summary, pairplot=None if figure is None else figure.name
    )
    seconds = time.perf_counter() - t0
    _timed(run, round_, "checkpoint", seconds, c0)
    store.set_stage(round_, Stage.DONE)
    return StageResult(
        round=round_,
        stage="checkpoint",
        skipped=False,
        seconds=seconds,
        details={"summary": summary, "pairplot": None if figure is None else str(figure)},
    )


def diagnose(run: Run, round_: int, client: Any = None, **kwargs: Any) -> StageResult:
    """Check a finished round: summary with MAP, predictive check, movement, C2ST, calibration.

    See :func:`sbi_rounds.diagnostics.diagnose` (this forwards to it; ``client`` may be a
    function returning the Dask client, called only when check simulations are due).
    """
    from sbi_rounds.diagnostics import diagnose as run_checks

    return run_checks(run, round_, client, **kwargs)


def _prior_limits(run: Run) -> list[tuple[float, float]] | None:
    p = run.config.prior
    if p.low is not None and p.high is not None:
        return list(zip(p.low, p.high, strict=True))
    return None


def round_table(store: RunStore) -> list[dict[str, Any]]:
    """One row per round: simulations, valid, epochs, best validation loss, seconds per stage."""
    rows = []
    for r in store.rounds():
        counts = store.counts(r)
        summary = store.training_summary(r)
        timings = store.timings(r)
        rows.append(
            {
                "round": r,
                "stage": store.stage(r).name.lower(),
                "simulations": counts["simulations"],
                "valid": counts["valid"],
                "epochs": summary.get("epochs"),
                "best_val_loss": summary.get("best_val_loss"),
                "retrains": max(0, len(store.training_attempts(r)) - 1) if summary else None,
                **{f"{k}_s": v for k, v in timings.items()},
            }
        )
    return rows


def format_round_table(rows: list[dict[str, Any]]) -> str:
    """The round table as aligned text."""
    cols = [
        ("round", "round"),
        ("simulations", "sims"),
        ("valid", "valid"),
        ("epochs", "epochs"),
        ("best_val_loss", "best val loss"),
        ("retrains", "retrained"),
        ("sample_s", "sample s"),
        ("simulate_s", "simulate s"),
        ("train_s", "train s"),
        ("posterior_s", "posterior s"),
        ("checkpoint_s", "ckpt s"),
    ]

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == -1:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    table = [[h for _, h in cols]] + [[fmt(row.get(k)) for k, _ in cols] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in table)
