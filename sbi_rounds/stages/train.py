"""Training a round's network, and training it again when it stalled."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sbi_rounds.builders.networks import (
    build_network,
    load_network,
    network_architecture,
)
from sbi_rounds.lifecycle.run import Run, network_for_round
from sbi_rounds.lifecycle.stage import stage
from sbi_rounds.methods import training_tensors
from sbi_rounds.seeding import derive_seed, seeded
from sbi_rounds.stages.adopted import adopt_training, adoptable_source
from sbi_rounds.stages.network_choice import gaussian_like, simple_wins
from sbi_rounds.stages.stall import StallCheck, check_stall, validation_losses
from sbi_rounds.store import Stage, TrainedNetwork, TrainingAttempt, TrainingSummaryRecord
from sbi_rounds.store.schema import NetworkArchitecture, StallCheckRecord
from sbi_rounds.training import (
    Callback,
    CheckpointCallback,
    TrainingSummary,
    run_training,
    split_train_val,
)
from sbi_rounds.training.config import resolve_retrain_from_scratch

__all__ = ["Trained", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Trained:
    """What the train stage did, of the network it kept.

    Attributes:
        epochs: Its epochs; best_val_loss: its best validation loss; stop_reason: why its
            training stopped; resumed_from_epoch: the checkpoint's epoch it resumed from
            (0: started afresh).
        retrains: Trainings again after a stall (``sbi_rounds.stages.stall``).
        network: Its model (``maf``, ``nsf``, ...).
        stalled: Whether it stalled (every attempt did).
    """

    epochs: int
    best_val_loss: float
    stop_reason: str
    resumed_from_epoch: int
    retrains: int
    network: str | None
    stalled: bool


def _training_data(run: Run, round_: int) -> tuple[torch.Tensor, ...]:
    thetas, xs, rounds = [], [], []
    for r in range(1, round_ + 1):
        theta, x, valid = run.store.read_simulations(r)
        thetas.append(torch.from_numpy(theta[valid]))
        xs.append(torch.from_numpy(x[valid]))
        rounds.append(r)
    return training_tensors(thetas, xs, rounds).tensors()


@stage("train", Stage.TRAINED)
def train(run: Run, round_: int, callbacks: Sequence[Callback] = ()) -> Trained:
    """Train the round's network on every round's valid data through ``run_training``.

    Round 1 builds a fresh network; later rounds continue from the previous round's
    weights, as sbi does, unless ``training.retrain_from_scratch`` (``auto``: the method's
    ``scratch_from_simulations``) makes them start afresh too (each attempt's ``fresh``
    field says which). Checkpoints go into the run file every
    ``training.checkpoint_every`` epochs (at most once per ``checkpoint_min_seconds``), and
    an interrupted training resumes from them.

    A training that stalled (see ``sbi_rounds.stages.stall``) is repeated from fresh weights with
    a new seed, up to ``stall.max_retrains`` times. In round 1, when ``network.model`` is
    not set, a method with a ``simple_network`` (SNPE, TSNPE: MAF) trains it first and its
    default network (NSF) too unless the posterior is Gaussian-like, then keeps one
    (``sbi_rounds.stages.network_choice``); later rounds continue with the network kept.
    Every attempt is recorded in the run file (``RunStore.training_attempts``; the second
    network's has ``fallback`` set). A round 1 started from another run's round 1 with the
    same training settings and seed adopts that run's training instead of repeating it
    (``sbi_rounds.stages.adopted``: a campaign's shared first round).
    """
    store, cfg = run.store, run.config
    data = _training_data(run, round_)
    loss_fn = run.method.loss_fn(cfg.method_settings, run.prior, round_)
    attempts = store.training_attempts(round_)
    if not attempts and (source := adoptable_source(run, round_)) is not None:
        adopt_training(run, round_, source)  # the same training, done once (campaigns)
        attempts = store.training_attempts(round_)
    while (settings := _next_architecture(run, round_, attempts)) is not None:
        record, network = _train_attempt(
            run, round_, len(attempts), data, loss_fn, callbacks, *settings
        )
        stored = [a for a in attempts if a.kept]
        if not stored:
            keep = True
        elif record.fallback:
            keep = not _simple_wins(run, round_, data, loss_fn, stored[-1], network)
        else:
            keep = not record.stalled or record.excess < stored[-1].excess
        record = record.model_copy(update={"kept": keep})
        store.finish_training_attempt(round_, record, network if keep else None)
        attempts.append(record)
    kept = [a for a in attempts if a.kept][-1]
    # A stall cut by a cap is one of the round's alerts (diagnostics.round_alerts), which
    # the flow shows with the round's line, the report and the Prefect artifact.
    if kept.stalled and not kept.capped:
        log.warning(
            "round %d: every one of %d trainings stalled; kept attempt %d, whose %s. Check "
            "the network and training settings (or raise stall.margin if the reference is "
            "too strict for this problem)",
            round_,
            len(attempts),
            kept.attempt + 1,
            _stall_text(kept),
        )
    summary = store.training_summary(round_)
    assert summary is not None  # committed with the kept attempt's network
    return Trained(
        epochs=summary.epochs,
        best_val_loss=summary.best_val_loss,
        stop_reason=summary.stop_reason,
        resumed_from_epoch=summary.resumed_from_epoch,
        retrains=sum(not a.fallback for a in attempts) - 1,
        network=kept.network,
        stalled=kept.stalled,
    )


def _stall_text(record: TrainingAttempt) -> str:
    return (
        f"{'stalled' if record.stalled else 'trained'} (validation loss "
        f"{record.loss:.3f} vs {record.reference_loss:.3f} of the "
        f"{record.reference.replace('_', ' ')} reference)"
    )


def _architecture(run: Run) -> NetworkArchitecture:
    """The run's network architecture: round 1's stored one once it trained (so a run
    keeps the architecture it started with, whatever the defaults of a later version),
    else the config's."""
    if run.store.rounds() and run.store.has_network(1):
        return run.store.read_network(1)[1]
    return network_architecture(run.config)


def _next_architecture(
    run: Run, round_: int, attempts: list[TrainingAttempt]
) -> tuple[NetworkArchitecture, bool] | None:
    """``(network architecture, fallback)`` of the round's next training attempt, where
    ``fallback`` tells a training of a second network; None when the round is done.

    The first attempt trains the run's network, or in round 1 the method's simple network
    when the user did not choose one. After it: a stalled attempt is trained again
    (``stall.max_retrains``); then, after a simple network that is not Gaussian-like, the
    method's default network (see :func:`train`), unless a budget capped the training.
    """
    cfg = run.config
    simple = run.method.simple_network
    choosing = round_ == 1 and simple is not None and cfg.network.model is None
    if not attempts:
        architecture = _architecture(run)
        if choosing:
            architecture = architecture.model_copy(update={"model": simple})
        return architecture, False
    last = attempts[-1]
    if (
        last.stalled
        and not last.capped
        and not last.fallback
        and len(attempts) <= cfg.stall.max_retrains
    ):
        log.warning(
            "round %d: the training %s; training again from fresh weights with a new seed "
            "(attempt %d of at most %d)",
            round_,
            _stall_text(last),
            len(attempts) + 1,
            cfg.stall.max_retrains + 1,
        )
        return _architecture(run), False
    kept = [a for a in attempts if a.kept][-1]
    if (
        not choosing
        or any(a.fallback for a in attempts)
        or kept.capped  # another training would stop at the same limit
    ):
        return None
    default = run.method.default_network
    if (
        not kept.stalled
        and kept.reference == "gaussian"
        and gaussian_like(kept.excess, kept.stderr, run.theta_dim)
    ):
        log.info(
            "round %d: %s fits the held-out rows no better than a linear-Gaussian model "
            "(validation loss %.3f vs %.3f): the posterior is Gaussian-like, keeping %s "
            "without training %s",
            round_, kept.network, kept.loss, kept.reference_loss, kept.network, default,
        )  # fmt: skip
        return None
    log.info(
        "round %d: %s fits the held-out rows better than a linear-Gaussian model (validation "
        "loss %.3f vs %.3f) or too few rows tell: training %s too, on the same rows",
        round_, kept.network, kept.loss, kept.reference_loss, default,
    )  # fmt: skip
    return _architecture(run).model_copy(update={"model": default}), True


def _simple_wins(
    run: Run,
    round_: int,
    data: tuple[torch.Tensor, ...],
    loss_fn: Any,
    kept: TrainingAttempt,
    default: TrainedNetwork,
) -> bool:
    """Whether the ``kept`` (simple) network fits round ``round_``'s held-out rows
    significantly better than the trained ``default`` one: both
    evaluated on the validation rows of the round's first training, which the default's
    training held out too (``sbi_rounds.stages.network_choice.simple_wins``)."""
    _, val_rows = split_train_val(
        data, run.config.training.validation_fraction, _split_seed(run.config.seed, round_)
    )
    seed = derive_seed(run.config.seed, round_, "selection")
    architecture = default.architecture
    network = load_network(run.method, architecture, default.weights, data[0], data[1])
    ours = validation_losses(network_for_round(run, round_), loss_fn, val_rows, seed)
    theirs = validation_losses(network, loss_fn, val_rows, seed)
    wins = simple_wins(ours, theirs)
    model = architecture.model
    log.info(
        "round %d: validation loss %s %.3f, %s %.3f on the same rows: keeping %s",
        round_, kept.network, float(ours.mean()), model, float(theirs.mean()),
        kept.network if wins else model,
    )  # fmt: skip
    return wins


def _split_seed(run_seed: int, round_: int) -> int:
    """The seed of the train/validation split of a round's first training (and of its
    alternative network's, so that the two are compared on the same held-out rows)."""
    return derive_seed(run_seed, round_, "train") % 2**63 % 2**31


def _train_attempt(
    run: Run,
    round_: int,
    attempt: int,
    data: tuple[torch.Tensor, ...],
    loss_fn: Any,
    callbacks: Sequence[Callback],
    architecture: NetworkArchitecture,
    fallback: bool,
) -> tuple[TrainingAttempt, TrainedNetwork]:
    """Train attempt ``attempt`` (0: the usual training) of the network ``architecture``
    describes, and check it for a stall.

    Returns:
        ``(record, network)``: the attempt's record (stall check, seed, epochs) and its
        trained network.
    """
    store, cfg = run.store, run.config
    keys = ("train",) if attempt == 0 else ("train", attempt)
    train_seed = derive_seed(cfg.seed, round_, *keys) % 2**63
    tcfg = cfg.training.model_copy(update={"seed": train_seed % 2**31})
    scratch = resolve_retrain_from_scratch(
        tcfg.retrain_from_scratch, int(data[0].shape[0]), run.method.scratch_from_simulations
    )
    fresh = round_ == 1 or scratch or attempt > 0
    with seeded(train_seed):
        net = (
            build_network(run.method, architecture, data[0], data[1])
            if fresh
            else network_for_round(run, round_ - 1)
        )
    # The alternative network holds out the same rows as the round's first training.
    split_seed = _split_seed(cfg.seed, round_) if fallback else tcfg.seed
    train_rows, val_rows = split_train_val(data, tcfg.validation_fraction, split_seed)
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
    seed = derive_seed(cfg.seed, round_, "split", attempt)
    check = _stall_check(run, round_, net, loss_fn, train_rows, val_rows, seed)
    record = TrainingAttempt(
        attempt=attempt,
        seed=train_seed,
        epochs=summary.epochs,
        stop_reason=summary.stop_reason,
        capped=summary.limit_reached is not None,
        network=architecture.model,
        fallback=fallback,
        fresh=fresh,
        **check.record(),
    )
    return record, TrainedNetwork(
        weights=net.state_dict(),
        architecture=architecture,
        history=summary.history,
        summary=_summary_record(summary, int(data[0].shape[0]), attempt, check),
    )


def _summary_record(
    summary: TrainingSummary, samples: int, attempt: int, check: StallCheck
) -> TrainingSummaryRecord:
    """The training summary stored with the round's network."""
    return TrainingSummaryRecord(
        epochs=summary.epochs,
        steps=summary.steps,
        best_val_loss=summary.best_val_loss,
        best_epoch=summary.best_epoch,
        stop_reason=summary.stop_reason,
        elapsed=summary.elapsed,
        resumed_from_epoch=summary.resumed_from_epoch,
        limit_reached=summary.limit_reached,
        batch_size=summary.batch_size,
        training_samples=samples,
        attempt=attempt,
        stall_check=StallCheckRecord(**check.record()),
    )


def _stall_check(
    run: Run,
    round_: int,
    net: nn.Module,
    loss_fn: Any,
    train_rows: tuple[torch.Tensor, ...],
    val_rows: tuple[torch.Tensor, ...],
    seed: int,
) -> StallCheck:
    """Compare ``net``'s validation losses with the reference ``sbi_rounds.stages.stall`` names:
    the previous round's network, in round 1 the method's (``Method.stall_reference``)."""
    losses = validation_losses(net, loss_fn, val_rows, seed)
    if round_ > 1:
        previous = network_for_round(run, round_ - 1)
        reference, kind = validation_losses(previous, loss_fn, val_rows, seed), "previous_round"
    else:
        reference, kind = run.method.stall_reference(net, loss_fn, train_rows, val_rows, seed)
    dims = run.method.stall_dimensions(train_rows[0].shape[1], train_rows[1].shape[1])
    return check_stall(losses, reference, kind, run.config.stall, dims)
