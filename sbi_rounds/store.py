"""The HDF5 run store: one crash-consistent file per run, the single source of truth.

How writes stay consistent when the process is killed at any instant:

* Structural changes (new groups, datasets, attributes: planning a round, saving the
  network, a training checkpoint) are made on a copy of the file that atomically replaces
  it (``os.replace``) once complete. A kill leaves either the old or the new file; a
  leftover ``run.h5.tmp-*`` copy is garbage and removed at the next open.
* Bulk data (parameters, simulations, posterior samples) goes into datasets allocated in
  full when the round is planned, written in place. A chunk's rows are written and
  flushed before the byte that marks the chunk done, so a kill mid-write leaves rows that
  are simply not marked and are redone. In-place writes change no HDF5 metadata.
* Nothing is ever pickled: weights, optimizer states and RNG states are datasets, and
  settings are JSON strings. Opening a run file never executes code from it.

``durable=True`` (default) also ``fsync``s after each commit, which protects against
power loss and OS crashes, not only killed processes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from sbi_rounds.serialize import read_nested, write_nested

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RoundInfo",
    "RunFileError",
    "RunStore",
    "Stage",
]

FORMAT = "sbi-rounds-run"
FORMAT_VERSION = 1


class Stage(IntEnum):
    """How far a round got. Each value is committed only after its work is on disk."""

    PLANNED = 1
    SAMPLED = 2
    SIMULATED = 3
    APPENDED = 4
    TRAINED = 5
    POSTERIOR = 6
    DONE = 7


#: Per-round timing slots (seconds), in the order they are stored.
TIMED_STAGES = ("sample", "simulate", "append", "train", "posterior", "checkpoint", "commit")


class RunFileError(ValueError):
    """The run file cannot be used as it is; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True)
class RoundInfo:
    """The fixed layout of a planned round."""

    round: int
    stage: Stage
    num_simulations: int
    chunk_size: int
    num_chunks: int
    theta_dim: int
    x_dim: int
    num_posterior_samples: int
    theta_done: int
    samples_done: int
    proposal: dict[str, Any]

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``chunk``."""
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.num_simulations)


def _rname(round_: int) -> str:
    return f"rounds/{round_:04d}"


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """Reads and commits one run file. Holds no open handle between calls (except inside
    :meth:`held_open`, which keeps one for a stream of in-place writes).

    Use :meth:`create` for a new run and :meth:`open` for an existing one. Writers must
    hold the run's lock (:mod:`sbi_rounds.locking`); readers need nothing.
    """

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self.commit_seconds = 0.0  # time spent committing, for the overhead benchmark
        self._held: h5py.File | None = None

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | Path, *, config: dict[str, Any], fingerprint: str, durable: bool = True
    ) -> RunStore:
        """Create a new run file (atomically: it appears complete or not at all)."""
        store = cls(path, durable=durable)
        if store.path.exists():
            raise RunFileError(f"{store.path} exists already; open it instead of creating it")
        store.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = store._tmp_path()
        with h5py.File(tmp, "w", locking=False) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["config"] = json.dumps(config, sort_keys=True)
            f.attrs["fingerprint"] = fingerprint
            f.attrs["created"] = time.time()
            f.attrs["created_on"] = socket.gethostname()
            f.attrs["config_history"] = json.dumps([])
            f.attrs["versions"] = json.dumps(_versions())
            f.create_group("rounds")
        store._publish(tmp)
        return store

    @classmethod
    def open(cls, path: str | Path, *, durable: bool = True) -> RunStore:
        """Open an existing run file, checking that it is one this version can read."""
        store = cls(path, durable=durable)
        if not store.path.is_file():
            raise RunFileError(f"there is no run file at {store.path}")
        try:
            with store._read() as f:
                fmt = f.attrs.get("format")
                version = int(f.attrs.get("format_version", -1))
        except OSError as e:
            raise RunFileError(
                f"{store.path} is not a readable HDF5 run file ({e}). It may be truncated or "
                "not an sbi-rounds run at all. Nothing was changed. Start a new run with "
                "another --run-id (or --run-dir), or restore the file from a backup."
            ) from None
        if fmt != FORMAT:
            raise RunFileError(
                f"{store.path} is an HDF5 file but not an sbi-rounds run file (format "
                f"attribute {fmt!r}). Nothing was changed; use another --run-id."
            )
        if version > FORMAT_VERSION:
            raise RunFileError(
                f"{store.path} was written by a newer sbi-rounds (run file format v{version}; "
                f"this version reads v{FORMAT_VERSION}). Upgrade: pip install -U sbi-rounds. "
                "Nothing was changed."
            )
        return store

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete copies left by a commit that was killed (call while holding the lock)."""
        stale = sorted(self.path.parent.glob(self.path.name + ".tmp-*"))
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    # --- low-level commit primitives ----------------------------------------------------
    def _tmp_path(self) -> Path:
        return self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")

    def _publish(self, tmp: Path) -> None:
        if self.durable:
            _fsync_path(tmp)
        os.replace(tmp, self.path)
        if self.durable:
            _fsync_path(self.path.parent, directory=True)

    @contextmanager
    def _read(self) -> Iterator[h5py.File]:
        with h5py.File(self.path, "r", locking=False) as f:
            yield f

    @contextmanager
    def held_open(self) -> Iterator[None]:
        """Keep the file open for the in-place writes inside (e.g. a round's chunks).

        Each in-place commit then costs a flush (and an ``fsync`` when durable) instead of
        opening and closing the file. A structural commit inside closes the handle for its
        copy-on-write replace and opens the new file after it. Nested calls are no-ops.
        """
        if self._held is not None:
            yield
            return
        self._held = h5py.File(self.path, "r+", locking=False)
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held is not None:
                held.close()

    @contextmanager
    def _structural(self) -> Iterator[h5py.File]:
        """Copy-on-write transaction: changes appear atomically, or not at all."""
        t0 = time.perf_counter()
        reopen = self._held is not None
        if reopen:
            self._held.close()
            self._held = None
        tmp = self._tmp_path()
        try:
            shutil.copyfile(self.path, tmp)
            try:
                with h5py.File(tmp, "r+", locking=False) as f:
                    yield f
                self._publish(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        finally:
            if reopen:
                self._held = h5py.File(self.path, "r+", locking=False)
            self.commit_seconds += time.perf_counter() - t0

    @contextmanager
    def _in_place(self) -> Iterator[h5py.File]:
        """Write into preallocated datasets (no metadata changes)."""
        t0 = time.perf_counter()
        try:
            if self._held is not None:
                yield self._held
                self._held.flush()
                if self.durable:
                    os.fsync(self._held.id.get_vfd_handle())
            else:
                with h5py.File(self.path, "r+", locking=False) as f:
                    yield f
                if self.durable:
                    _fsync_path(self.path)
        finally:
            self.commit_seconds += time.perf_counter() - t0

    # --- run-level metadata -------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The run's current configuration (JSON-compatible dict)."""
        with self._read() as f:
            return json.loads(f.attrs["config"])

    def fingerprint(self) -> str:
        """The fingerprint of the settings the run was created with."""
        with self._read() as f:
            return str(f.attrs["fingerprint"])

    def update_config(self, config: dict[str, Any], changes: list[str]) -> None:
        """Store a changed (safe) configuration and append the change to the history."""
        with self._structural() as f:
            history = json.loads(f.attrs["config_history"])
            history.append({"time": time.time(), "changes": changes})
            f.attrs["config_history"] = json.dumps(history)
            f.attrs["config"] = json.dumps(config, sort_keys=True)

    def config_history(self) -> list[dict[str, Any]]:
        """Every accepted configuration change: ``[{"time": ..., "changes": [...]}]``."""
        with self._read() as f:
            return json.loads(f.attrs["config_history"])

    # --- rounds -------------------------------------------------------------------------
    def rounds(self) -> list[int]:
        """The planned rounds, ascending (1-based)."""
        with self._read() as f:
            return sorted(int(k) for k in f["rounds"].keys())

    def stage(self, round_: int) -> Stage | None:
        """How far ``round_`` got, or None if it was never planned."""
        with self._read() as f:
            name = _rname(round_)
            return Stage(int(f[name]["stage"][0])) if name in f else None

    def round_info(self, round_: int) -> RoundInfo:
        """The layout and progress of a planned round."""
        with self._read() as f:
            if _rname(round_) not in f:
                raise KeyError(f"round {round_} was never planned in {self.path}")
            g = f[_rname(round_)]
            return RoundInfo(
                round=round_,
                stage=Stage(int(g["stage"][0])),
                num_simulations=int(g.attrs["num_simulations"]),
                chunk_size=int(g.attrs["chunk_size"]),
                num_chunks=int(g.attrs["num_chunks"]),
                theta_dim=int(g["theta"].shape[1]),
                x_dim=int(g["x"].shape[1]),
                num_posterior_samples=int(g["posterior_samples"].shape[0]),
                theta_done=int(g["theta_done"][0]),
                samples_done=int(g["samples_done"][0]),
                proposal=json.loads(g.attrs["proposal"]),
            )

    def plan_round(
        self,
        round_: int,
        *,
        num_simulations: int,
        theta_dim: int,
        x_dim: int,
        chunk_size: int,
        num_posterior_samples: int,
        proposal: Mapping[str, Any],
    ) -> RoundInfo:
        """Allocate every fixed-size buffer of a round, so later writes are in place."""
        num_chunks = math.ceil(num_simulations / chunk_size)
        with self._structural() as f:
            name = _rname(round_)
            if name in f:
                raise RunFileError(f"round {round_} is planned already")
            g = f.create_group(name)
            g.attrs["num_simulations"] = num_simulations
            g.attrs["chunk_size"] = chunk_size
            g.attrs["num_chunks"] = num_chunks
            g.attrs["proposal"] = json.dumps(dict(proposal), sort_keys=True)
            g.attrs["planned"] = time.time()
            _alloc(g, "theta", (num_simulations, theta_dim), np.float32, np.nan)
            _alloc(g, "theta_done", (), np.int64, 0)
            _alloc(g, "x", (num_simulations, x_dim), np.float64, np.nan)
            _alloc(g, "valid", (num_simulations,), np.uint8, 0)
            _alloc(g, "chunk_done", (num_chunks,), np.uint8, 0)
            _alloc(g, "chunk_seconds", (num_chunks,), np.float64, np.nan)
            _alloc(g, "posterior_samples", (num_posterior_samples, theta_dim), np.float32, np.nan)
            _alloc(g, "samples_done", (), np.int64, 0)
            _alloc(g, "timings", (len(TIMED_STAGES),), np.float64, np.nan)
            _alloc(g, "counts", (3,), np.int64, -1)  # simulations, valid, invalid
            _alloc(g, "stage", (), np.uint8, int(Stage.PLANNED))
        return self.round_info(round_)

    def set_stage(self, round_: int, stage: Stage) -> None:
        """Commit that ``round_`` reached ``stage`` (stages only move forward)."""
        with self._in_place() as f:
            ds = f[_rname(round_)]["stage"]
            if int(ds[0]) < int(stage):
                ds[0] = int(stage)

    def record_timing(self, round_: int, stage: str, seconds: float) -> None:
        """Add ``seconds`` to the round's time for ``stage`` (one of TIMED_STAGES)."""
        i = TIMED_STAGES.index(stage)
        with self._in_place() as f:
            ds = f[_rname(round_)]["timings"]
            old = float(ds[i])
            ds[i] = seconds if math.isnan(old) else old + seconds

    def timings(self, round_: int) -> dict[str, float]:
        """Seconds per stage of a round (NaN: not run yet)."""
        with self._read() as f:
            values = f[_rname(round_)]["timings"][()]
        return dict(zip(TIMED_STAGES, (float(v) for v in values), strict=True))

    # --- parameters ---------------------------------------------------------------------
    def write_theta(self, round_: int, start: int, theta: np.ndarray) -> None:
        """Write parameter rows ``[start, start + len(theta))`` and advance ``theta_done``."""
        with self._in_place() as f:
            g = f[_rname(round_)]
            g["theta"][start : start + len(theta)] = np.asarray(theta, dtype=np.float32)
            f.flush()
            g["theta_done"][0] = start + len(theta)

    def read_theta(self, round_: int) -> np.ndarray:
        """The round's parameters ``(N, D)`` (rows past ``theta_done`` are NaN)."""
        with self._read() as f:
            return f[_rname(round_)]["theta"][()]

    # --- simulations --------------------------------------------------------------------
    def pending_chunks(self, round_: int) -> list[int]:
        """Chunks whose simulations are not committed yet."""
        with self._read() as f:
            done = f[_rname(round_)]["chunk_done"][()]
        return [int(i) for i in np.flatnonzero(done == 0)]

    def write_chunk(self, round_: int, chunk: int, x: np.ndarray, seconds: float) -> None:
        """Commit a finished chunk: its rows of ``x``, their validity, then the done mark."""
        self.write_chunks(round_, [(chunk, x, seconds)])

    def write_chunks(
        self, round_: int, chunks: Sequence[tuple[int, np.ndarray, float]]
    ) -> None:
        """Commit finished chunks ``(chunk, x (n, K), seconds)`` in one in-place write.

        The rows of every chunk and their validity reach the file before any of their done
        marks, so a chunk marked done always has its data.
        """
        if not chunks:
            return
        # Chunks that finish together are mostly neighbours: one slice write per run of
        # consecutive chunks and dataset (each h5py write costs far more than its bytes).
        runs: list[list[tuple[int, np.ndarray, float]]] = []
        for item in sorted(chunks, key=lambda c: c[0]):
            if runs and runs[-1][-1][0] + 1 == item[0]:
                runs[-1].append(item)
            else:
                runs.append([item])
        with self._in_place() as f:
            g = f[_rname(round_)]
            size = int(g.attrs["chunk_size"])
            for run in runs:
                first = run[0][0]
                x = np.concatenate([x for _, x, _ in run]) if len(run) > 1 else run[0][1]
                start = first * size
                g["x"][start : start + len(x)] = x
                g["valid"][start : start + len(x)] = np.isfinite(x).all(axis=1).astype(np.uint8)
                g["chunk_seconds"][first : first + len(run)] = [s for _, _, s in run]
            f.flush()
            for run in runs:
                first = run[0][0]
                g["chunk_done"][first : first + len(run)] = 1

    def read_simulations(self, round_: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(theta (N, D), x (N, K), valid (N,) bool)`` of a round."""
        with self._read() as f:
            g = f[_rname(round_)]
            return g["theta"][()], g["x"][()], g["valid"][()].astype(bool)

    def set_counts(self, round_: int, simulations: int, valid: int) -> None:
        """Record the round's number of simulations and of valid ones."""
        with self._in_place() as f:
            f[_rname(round_)]["counts"][:] = [simulations, valid, simulations - valid]

    def counts(self, round_: int) -> dict[str, int]:
        """``{"simulations", "valid", "invalid"}`` (-1 until the append stage ran)."""
        with self._read() as f:
            c = f[_rname(round_)]["counts"][()]
        return {"simulations": int(c[0]), "valid": int(c[1]), "invalid": int(c[2])}

    def chunk_seconds(self, round_: int) -> np.ndarray:
        """Wall seconds each chunk took on its worker (NaN: not done)."""
        with self._read() as f:
            return f[_rname(round_)]["chunk_seconds"][()]

    def record_failure(self, round_: int, chunk: int, theta: np.ndarray, error: str) -> None:
        """Save the parameters and traceback of a chunk that kept failing."""
        with self._structural() as f:
            g = f[_rname(round_)].require_group("failures")
            name = str(chunk)
            if name in g:
                del g[name]
            ds = g.create_dataset(name, data=np.asarray(theta, dtype=np.float64))
            ds.attrs["traceback"] = error
            ds.attrs["time"] = time.time()

    def failures(self, round_: int) -> dict[int, tuple[np.ndarray, str]]:
        """Failed chunks: ``{chunk: (theta, traceback)}``."""
        with self._read() as f:
            g = f[_rname(round_)]
            if "failures" not in g:
                return {}
            return {int(k): (v[()], str(v.attrs["traceback"])) for k, v in g["failures"].items()}

    # --- training -----------------------------------------------------------------------
    def write_network(
        self,
        round_: int,
        *,
        weights: Mapping[str, torch.Tensor],
        architecture: Mapping[str, Any],
        history: Mapping[str, list[float]],
        summary: Mapping[str, Any],
    ) -> None:
        """Commit the trained network (weights as datasets), history and summary at once.

        The round's training checkpoint is dropped in the same commit.
        """
        with self._structural() as f:
            _write_network(f[_rname(round_)], weights, architecture, history, summary)

    def finish_training_attempt(
        self,
        round_: int,
        record: Mapping[str, Any],
        network: Mapping[str, Any] | None = None,
    ) -> None:
        """Commit one training attempt of ``round_`` at once: its record, appended to
        :meth:`training_attempts`, and, when given, its network (the ``write_network``
        keywords) in place of the stored one. The training checkpoint is dropped.
        """
        with self._structural() as f:
            g = f[_rname(round_)]
            attempts = json.loads(g.attrs.get("training_attempts", "[]"))
            g.attrs["training_attempts"] = json.dumps([*attempts, dict(record)], sort_keys=True)
            if network is not None:
                _write_network(g, **network)
            elif "training_checkpoint" in g:
                del g["training_checkpoint"]

    def training_attempts(self, round_: int) -> list[dict[str, Any]]:
        """Records of the round's finished training attempts, first to last (see
        ``sbi_rounds.stall``); empty before the first finished."""
        with self._read() as f:
            return json.loads(f[_rname(round_)].attrs.get("training_attempts", "[]"))

    def has_network(self, round_: int) -> bool:
        """Whether a trained network of ``round_`` was committed."""
        with self._read() as f:
            return f"{_rname(round_)}/network" in f

    def read_network(self, round_: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(weights, architecture settings)`` of the round's trained network."""
        with self._read() as f:
            path = f"{_rname(round_)}/network"
            if path not in f:
                raise KeyError(f"round {round_} has no trained network in {self.path}")
            net = f[path]
            weights = {k: torch.from_numpy(np.array(v[()])) for k, v in net.items()}
            return weights, json.loads(net.attrs["architecture"])

    def read_history(self, round_: int) -> dict[str, np.ndarray]:
        """Per-epoch training history of a trained round."""
        with self._read() as f:
            g = f[_rname(round_)]
            return {k: v[()] for k, v in g["history"].items()} if "history" in g else {}

    def training_summary(self, round_: int) -> dict[str, Any]:
        """The summary of a round's training (empty before it finished)."""
        with self._read() as f:
            raw = f[_rname(round_)].attrs.get("training_summary")
            return json.loads(raw) if raw is not None else {}

    def checkpoint_sink(self, round_: int) -> RoundCheckpointSink:
        """Where the training checkpoints of ``round_`` go (see ``CheckpointCallback``)."""
        return RoundCheckpointSink(self, round_)

    # --- posterior samples --------------------------------------------------------------
    def write_samples(self, round_: int, start: int, samples: np.ndarray) -> None:
        """Write posterior samples ``[start, start + len)`` and advance ``samples_done``."""
        with self._in_place() as f:
            g = f[_rname(round_)]
            g["posterior_samples"][start : start + len(samples)] = samples
            f.flush()
            g["samples_done"][0] = start + len(samples)

    def read_samples(self, round_: int) -> np.ndarray:
        """The committed posterior samples at xobs ``(S', D)``."""
        with self._read() as f:
            g = f[_rname(round_)]
            return g["posterior_samples"][: int(g["samples_done"][0])]

    # --- attributes for diagnostics -----------------------------------------------------
    def write_round_attrs(self, round_: int, **values: Any) -> None:
        """Store JSON-encoded values on the round (summaries, diagnostics)."""
        with self._structural() as f:
            g = f[_rname(round_)]
            for key, value in values.items():
                g.attrs[key] = json.dumps(value, sort_keys=True)

    def read_round_attr(self, round_: int, key: str, default: Any = None) -> Any:
        """A value stored with :meth:`write_round_attrs`."""
        with self._read() as f:
            raw = f[_rname(round_)].attrs.get(key)
            return default if raw is None else json.loads(raw)


class RoundCheckpointSink:
    """Training checkpoints of one round, inside the run file (no pickle)."""

    def __init__(self, store: RunStore, round_: int) -> None:
        self.store, self.round = store, round_

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the round's checkpoint with ``state`` (atomic)."""
        with self.store._structural() as f:
            g = f[_rname(self.round)]
            if "training_checkpoint" in g:
                del g["training_checkpoint"]
            write_nested(g, "training_checkpoint", state)

    def load(self) -> dict[str, Any] | None:
        """The round's last checkpoint, or None."""
        with self.store._read() as f:
            g = f[_rname(self.round)]
            return read_nested(g["training_checkpoint"]) if "training_checkpoint" in g else None


def _write_network(
    g: h5py.Group,
    weights: Mapping[str, torch.Tensor],
    architecture: Mapping[str, Any],
    history: Mapping[str, list[float]],
    summary: Mapping[str, Any],
) -> None:
    """Replace the round group's network, history and summary; drop its checkpoint."""
    for key in ("network", "history", "training_checkpoint"):
        if key in g:
            del g[key]
    net = g.create_group("network")
    net.attrs["architecture"] = json.dumps(dict(architecture), sort_keys=True)
    for key, value in weights.items():
        net.create_dataset(key, data=value.detach().cpu().numpy())
    hist = g.create_group("history")
    for key, values in history.items():
        hist.create_dataset(key, data=np.asarray(values, dtype=np.float64))
    g.attrs["training_summary"] = json.dumps(dict(summary), sort_keys=True)


def _alloc(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> None:
    """A contiguous dataset allocated and filled now, so later writes touch data only.

    Scalars are stored with shape (1,): HDF5 may keep scalar data inside the object
    header, where writing it would be a metadata change.
    """
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    ds = group.create_dataset(
        name, shape=shape or (1,), dtype=dtype, dcpl=dcpl, fillvalue=np.array(fill, dtype=dtype)
    )
    if ds.id.get_offset() is None:
        raise RunFileError(f"could not preallocate dataset {name!r} in the run file")


def _versions() -> dict[str, str]:
    import sbi

    return {
        "sbi": sbi.__version__,
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }
