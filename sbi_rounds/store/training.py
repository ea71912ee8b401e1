"""A round's training in the run file: networks, attempts, history, checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch

from sbi_rounds.store.checksums import stamp, stamp_tree
from sbi_rounds.store.files import StoreFile
from sbi_rounds.store.format import round_group
from sbi_rounds.store.schema import (
    TRAINING_ATTEMPTS,
    TRAINING_SUMMARY,
    NetworkArchitecture,
    TrainingAttempt,
    TrainingSummaryRecord,
    read_attr,
    write_attr,
)
from sbi_rounds.store.serialize import read_nested, write_nested

__all__ = ["RoundCheckpointSink", "TrainedNetwork", "TrainingRecords"]


@dataclass(frozen=True)
class TrainedNetwork:
    """A trained network as the store commits it.

    Attributes:
        weights: The network's ``state_dict`` (name -> tensor).
        architecture: What rebuilds the network around the weights.
        history: Per-epoch curves (``train_loss``, ``val_loss``, ...; name -> values).
        summary: How the training went (epochs, best validation loss, stop reason, ...).
    """

    weights: Mapping[str, torch.Tensor]
    architecture: NetworkArchitecture
    history: Mapping[str, list[float]]
    summary: TrainingSummaryRecord


class TrainingRecords(StoreFile):
    """Reads and writes a round's trained network, its attempts and its checkpoints."""

    # --- training -----------------------------------------------------------------------
    def write_network(self, round_: int, network: TrainedNetwork) -> None:
        """Commit the trained network (weights as datasets), history and summary at once.

        The round's training checkpoint is dropped in the same commit.
        """
        with self._structural() as f:
            write_network_group(f[round_group(round_)], network)

    def finish_training_attempt(
        self,
        round_: int,
        record: TrainingAttempt,
        network: TrainedNetwork | None = None,
    ) -> None:
        """Commit one training attempt of ``round_`` at once: its record, appended to
        :meth:`training_attempts`, and, when given, its network in place of the stored
        one. The training checkpoint is dropped.
        """
        with self._structural() as f:
            g = f[round_group(round_)]
            attempts = read_attr(g, TRAINING_ATTEMPTS, list[TrainingAttempt]) or []
            write_attr(g, TRAINING_ATTEMPTS, list[TrainingAttempt], [*attempts, record])
            if network is not None:
                write_network_group(g, network)
            elif "training_checkpoint" in g:
                del g["training_checkpoint"]

    def adopt_training(
        self, round_: int, attempts: list[TrainingAttempt], network: TrainedNetwork
    ) -> None:
        """Commit another run's finished training as ``round_``'s at once: its attempt
        records (in place of any) and its kept network (``sbi_rounds.stages.adopted``)."""
        with self._structural() as f:
            g = f[round_group(round_)]
            write_attr(g, TRAINING_ATTEMPTS, list[TrainingAttempt], list(attempts))
            write_network_group(g, network)

    def training_attempts(self, round_: int) -> list[TrainingAttempt]:
        """Records of the round's finished training attempts, first to last (see
        ``sbi_rounds.stages.stall``); empty before the first finished."""
        with self._read() as f:
            return read_attr(f[round_group(round_)], TRAINING_ATTEMPTS, list[TrainingAttempt]) or []

    def has_network(self, round_: int) -> bool:
        """Whether a trained network of ``round_`` was committed."""
        with self._read() as f:
            return f"{round_group(round_)}/network" in f

    def read_network(self, round_: int) -> tuple[dict[str, torch.Tensor], NetworkArchitecture]:
        """``(weights, architecture)`` of the round's trained network."""
        with self._read() as f:
            path = f"{round_group(round_)}/network"
            if path not in f:
                raise KeyError(f"round {round_} has no trained network in {self.path}")
            net = f[path]
            weights = {k: torch.from_numpy(np.array(v[()])) for k, v in net.items()}
            return weights, NetworkArchitecture.from_json(net.attrs["architecture"])

    def read_history(self, round_: int) -> dict[str, np.ndarray]:
        """Per-epoch training history of a trained round."""
        with self._read() as f:
            g = f[round_group(round_)]
            return {k: v[()] for k, v in g["history"].items()} if "history" in g else {}

    def training_summary(self, round_: int) -> TrainingSummaryRecord | None:
        """The summary of the training of the round's network (None: not trained yet)."""
        with self._read() as f:
            return read_attr(f[round_group(round_)], TRAINING_SUMMARY, TrainingSummaryRecord)

    def save_checkpoint(self, round_: int, state: Mapping[str, Any]) -> None:
        """Replace the round's training checkpoint with ``state`` (atomic)."""
        with self._structural() as f:
            g = f[round_group(round_)]
            if "training_checkpoint" in g:
                del g["training_checkpoint"]
            write_nested(g, "training_checkpoint", state)
            stamp_tree(g["training_checkpoint"])

    def load_checkpoint(self, round_: int) -> dict[str, Any] | None:
        """The round's last training checkpoint, or None."""
        with self._read() as f:
            g = f[round_group(round_)]
            return read_nested(g["training_checkpoint"]) if "training_checkpoint" in g else None

    def checkpoint_sink(self, round_: int) -> RoundCheckpointSink:
        """Where the training checkpoints of ``round_`` go (see ``CheckpointCallback``)."""
        return RoundCheckpointSink(self, round_)


class RoundCheckpointSink:
    """Training checkpoints of one round, inside the run file (no pickle)."""

    def __init__(self, store: TrainingRecords, round_: int) -> None:
        self.store, self.round = store, round_

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the round's checkpoint with ``state`` (atomic)."""
        self.store.save_checkpoint(self.round, state)

    def load(self) -> dict[str, Any] | None:
        """The round's last checkpoint, or None."""
        return self.store.load_checkpoint(self.round)


def write_network_group(g: h5py.Group, network: TrainedNetwork) -> None:
    """Replace the round group's network, history and summary; drop its checkpoint."""
    for key in ("network", "history", "training_checkpoint"):
        if key in g:
            del g[key]
    net = g.create_group("network")
    net.attrs["architecture"] = network.architecture.to_json()
    for key, value in network.weights.items():
        stamp(net.create_dataset(key, data=value.detach().cpu().numpy()))
    hist = g.create_group("history")
    for key, values in network.history.items():
        stamp(hist.create_dataset(key, data=np.asarray(values, dtype=np.float64)))
    write_attr(g, TRAINING_SUMMARY, TrainingSummaryRecord, network.summary)
