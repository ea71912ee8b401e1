"""A run file: create and open it, commit to it atomically, its settings and its rounds."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import h5py
import numpy as np

from sbi_rounds.store.checksums import Damage, DamagedRunError, verify_file
from sbi_rounds.store.damage import damage_message
from sbi_rounds.store.format import (
    FORMAT,
    FORMAT_VERSION,
    TIMED_STAGES,
    RoundInfo,
    RunFileError,
    Stage,
    allocate,
    fsync_path,
    retire_settings,
    round_group,
    versions,
)

__all__ = ["StoreFile"]


#: Run files this process found intact, with their state then (see ``check_intact``).
_INTACT: dict[str, tuple[int, int, int]] = {}


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """The inode, size and modification time of ``path`` (None: cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class StoreFile:
    """One run file: opening it, its commit primitives, the run's settings, its rounds.

    The primitives (``_read``, ``_structural``, ``_in_place``) are what the record
    classes of :class:`~sbi_rounds.store.RunStore` write through.
    """

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self.commit_seconds = 0.0  # time spent committing, for the overhead benchmark
        self._held: h5py.File | None = None

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        config: dict[str, Any],
        fingerprint: str,
        code: dict[str, Any] | None = None,
        durable: bool = True,
    ) -> Self:
        """Create a new run file (atomically: it appears complete or not at all).

        ``code`` is the fingerprint of the simulator and prior as code
        (``sbi_rounds.fingerprint``).
        """
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
            if code is not None:
                f.attrs["code_fingerprint"] = json.dumps(code, sort_keys=True)
            f.attrs["created"] = time.time()
            f.attrs["created_on"] = socket.gethostname()
            f.attrs["config_history"] = json.dumps([])
            f.attrs["versions"] = json.dumps(versions())
            f.create_group("rounds")
        store._publish(tmp)
        return store

    @classmethod
    def open(cls, path: str | Path, *, durable: bool = True) -> Self:
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
            fsync_path(tmp)
        os.replace(tmp, self.path)
        if self.durable:
            fsync_path(self.path.parent, directory=True)

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
            try:  # a failed copy (disk full) leaves no partial copy behind either
                shutil.copyfile(self.path, tmp)
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
                    fsync_path(self.path)
        finally:
            self.commit_seconds += time.perf_counter() - t0

    # --- integrity ------------------------------------------------------------------------
    def verify(self, under: str = "/") -> list[Damage]:
        """Read the file (or the group ``under``): what is damaged (unreadable, or not
        matching its checksum)."""
        try:
            with self._read() as f:
                return verify_file(f, under)
        except OSError as e:
            return [Damage("/", f"the file cannot be opened: {e}")]

    def check_intact(self, under: str = "/") -> None:
        """Raise :class:`DamagedRunError` naming every damaged part (see :meth:`verify`).

        A whole file found intact is not read again by this process while it is unchanged
        (same inode, size and modification time): the command line checks it before the
        flow starts, and the flow's session would otherwise read it all a second time.
        """
        key = _file_state(self.path) if under == "/" else None
        if key is not None and _INTACT.get(str(self.path)) == key:
            return
        started = time.time_ns()
        damage = self.verify(under)
        if damage:
            raise DamagedRunError(damage_message(self.path, damage))
        # only a file last written well before (timestamps may tick in milliseconds)
        if key is not None and started - key[2] > 50_000_000:
            _INTACT[str(self.path)] = key

    # --- run-level metadata -------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The run's current configuration (JSON-compatible dict)."""
        with self._read() as f:
            return retire_settings(json.loads(f.attrs["config"]))

    def provenance(self) -> dict[str, Any]:
        """Where and with what the run file was created: ``versions`` (package -> version),
        ``created_on`` (host) and ``created`` (Unix time)."""
        with self._read() as f:
            a = f.attrs
            return {
                "versions": json.loads(a["versions"]) if "versions" in a else {},
                "created_on": str(a.get("created_on", "")),
                "created": float(a.get("created", 0.0)),
            }

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

    def code_fingerprint(self) -> dict[str, Any] | None:
        """The simulator's and prior's code fingerprint (None: a run from before they were
        recorded)."""
        with self._read() as f:
            raw = f.attrs.get("code_fingerprint")
            return None if raw is None else json.loads(raw)

    def record_code_fingerprint(self, code: dict[str, Any], changes: list[str]) -> None:
        """Store the code fingerprint; ``changes`` (accepted code changes) go to the history."""
        with self._structural() as f:
            f.attrs["code_fingerprint"] = json.dumps(code, sort_keys=True)
            if changes:
                history = json.loads(f.attrs["config_history"])
                history.append({"time": time.time(), "changes": changes})
                f.attrs["config_history"] = json.dumps(history)

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
            name = round_group(round_)
            return Stage(int(f[name]["stage"][0])) if name in f else None

    def round_info(self, round_: int) -> RoundInfo:
        """The layout and progress of a planned round."""
        with self._read() as f:
            if round_group(round_) not in f:
                raise KeyError(f"round {round_} was never planned in {self.path}")
            g = f[round_group(round_)]
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
            name = round_group(round_)
            if name in f:
                raise RunFileError(f"round {round_} is planned already")
            g = f.create_group(name)
            g.attrs["num_simulations"] = num_simulations
            g.attrs["chunk_size"] = chunk_size
            g.attrs["num_chunks"] = num_chunks
            g.attrs["proposal"] = json.dumps(dict(proposal), sort_keys=True)
            g.attrs["planned"] = time.time()
            allocate(g, "theta", (num_simulations, theta_dim), np.float32, np.nan)
            allocate(g, "theta_done", (), np.int64, 0)
            allocate(g, "x", (num_simulations, x_dim), np.float64, np.nan)
            allocate(g, "valid", (num_simulations,), np.uint8, 0)
            allocate(g, "chunk_done", (num_chunks,), np.uint8, 0)
            allocate(g, "chunk_seconds", (num_chunks,), np.float64, np.nan)
            allocate(g, "posterior_samples", (num_posterior_samples, theta_dim), np.float32, np.nan)
            allocate(g, "samples_done", (), np.int64, 0)
            allocate(g, "timings", (len(TIMED_STAGES),), np.float64, np.nan)
            allocate(g, "counts", (3,), np.int64, -1)  # simulations, valid, invalid
            allocate(g, "stage", (), np.uint8, int(Stage.PLANNED))
        return self.round_info(round_)

    def set_stage(self, round_: int, stage: Stage) -> None:
        """Commit that ``round_`` reached ``stage`` (stages only move forward)."""
        with self._in_place() as f:
            ds = f[round_group(round_)]["stage"]
            if int(ds[0]) < int(stage):
                ds[0] = int(stage)

    def record_timing(self, round_: int, stage: str, seconds: float) -> None:
        """Add ``seconds`` to the round's time for ``stage`` (one of TIMED_STAGES)."""
        i = TIMED_STAGES.index(stage)
        with self._in_place() as f:
            ds = f[round_group(round_)]["timings"]
            old = float(ds[i])
            ds[i] = seconds if math.isnan(old) else old + seconds

    def timings(self, round_: int) -> dict[str, float]:
        """Seconds per stage of a round (NaN: not run yet)."""
        with self._read() as f:
            values = f[round_group(round_)]["timings"][()]
        return dict(zip(TIMED_STAGES, (float(v) for v in values), strict=True))
