"""A run file: create and open it, commit to it atomically, its settings and its rounds."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import h5py

from sbi_rounds.store.bulk import (
    BULK_FOLDER_ATTR,
    bulk_candidates,
    create_bulk_file,
    linked_files,
    round_files,
    stale_files,
    sync_files,
)
from sbi_rounds.store.checksums import Damage, DamagedRunError, stamp_settings, verify_file
from sbi_rounds.store.damage import damage_message, damage_summary
from sbi_rounds.store.format import (
    FORMAT,
    FORMAT_VERSION,
    RunFileError,
    fsync_path,
    retire_settings,
    round_group,
    versions,
)
from sbi_rounds.store.layout import BULK_FOLDER

__all__ = ["StoreFile"]


#: Run files this process found intact, with their state then (see ``check_intact``).
_INTACT: dict[str, tuple[tuple[str, int, int, int], ...]] = {}


def _file_state(path: Path) -> tuple[tuple[str, int, int, int], ...] | None:
    """The name, inode, size and modification time of ``path`` and of the bulk files beside
    it (None: cannot be read)."""
    try:
        paths = [path, *bulk_candidates(path)]
        stats = [(p.name, os.stat(p)) for p in paths]
    except OSError:
        return None
    return tuple((n, st.st_ino, st.st_size, st.st_mtime_ns) for n, st in stats)


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
        bulk_folder: str = BULK_FOLDER,
    ) -> Self:
        """Create a new run file (atomically: it appears complete or not at all).

        ``code`` is the fingerprint of the simulator and prior as code
        (``sbi_rounds.lifecycle.fingerprint``); ``bulk_folder`` the folder beside it, by its path
        relative to it, of its rounds' files (``""``: beside it, as every run file made
        before the folder has them).
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
            f.attrs[BULK_FOLDER_ATTR] = bulk_folder
            f.create_group("rounds")
            stamp_settings(f)
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
        """Delete copies left by a commit that was killed, and bulk files that nothing links
        to (made for a commit that was killed; call while holding the lock)."""
        stale = sorted(self.path.parent.glob(self.path.name + ".tmp-*"))
        try:
            with self._read() as f:
                linked: set[str] | None = linked_files(f)
        except Exception:  # noqa: BLE001 - a damaged run file: which files it links is unknown
            linked = None
        if linked is None:  # temporaries only: never a round file it may link
            stale += [p for p in stale_files(self.path, set()) if ".tmp-" in p.name]
        else:
            stale += stale_files(self.path, linked)
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
    def _read_or_held(self) -> Iterator[h5py.File]:
        """The held file (see :meth:`held_open`), else the file opened to read."""
        if self._held is not None:
            yield self._held
        else:
            with self._read() as f:
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
                    stamp_settings(f)  # the settings it may have changed
                self._publish(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        finally:
            if reopen:
                self._held = h5py.File(self.path, "r+", locking=False)
            self.commit_seconds += time.perf_counter() - t0

    @contextmanager
    def _in_place(
        self, round_: int | None = None, *, bulk_only: bool = False
    ) -> Iterator[h5py.File]:
        """Write into preallocated datasets (no metadata changes); when durable, the bulk
        files of ``round_`` are synced after, and the run file unless the write touched
        ``bulk_only`` arrays of a round that has bulk files (format 2)."""
        t0 = time.perf_counter()
        try:
            if self._held is not None:
                yield self._held
                self._held.flush()
                if self.durable:
                    self._sync(self._held, round_, bulk_only)
            else:
                with h5py.File(self.path, "r+", locking=False) as f:
                    yield f
                    f.flush()
                    if self.durable:
                        self._sync(f, round_, bulk_only)
        finally:
            self.commit_seconds += time.perf_counter() - t0

    def _sync(self, f: h5py.File, round_: int | None, bulk_only: bool) -> None:
        files = round_files(f[round_group(round_)]) if round_ is not None else []
        sync_files(self.path.parent, files)
        if not (bulk_only and files):
            os.fsync(f.id.get_vfd_handle())

    def _new_bulk_file(self, name: str, datasets: Mapping[str, Any], **values: Any) -> None:
        """Create the bulk file ``name`` (a path relative to the run file's directory, see
        ``bulk``), timed as a commit."""
        t0 = time.perf_counter()
        try:
            create_bulk_file(self.path.parent / name, datasets, durable=self.durable, values=values)
        finally:
            self.commit_seconds += time.perf_counter() - t0

    def data_bytes(self) -> int:
        """Bytes of the run file and of the round files it links to."""
        with self._read() as f:
            names = linked_files(f)
        files = [self.path, *(self.path.parent / n for n in names)]
        return sum(p.stat().st_size for p in files if p.exists())

    # --- integrity ------------------------------------------------------------------------
    def verify(self, under: str = "/", *, deep: bool = True) -> list[Damage]:
        """Read the file (or the group ``under``): what is damaged (unreadable, or not
        matching its checksum). ``deep=False`` leaves out the values of round files unchanged
        since they were sealed (see ``checksums.verify_file``)."""
        try:
            with self._read() as f:
                return verify_file(f, under, deep=deep)
        except OSError as e:
            return [Damage("/", f"the file cannot be opened: {e}")]

    def damaged_rounds(self, *, deep: bool = False) -> dict[int, str]:
        """The rounds with damaged parts (see :meth:`verify`), each with a short account
        (``"its file run.round-0002.h5 cannot be read"``); readers such as ``export`` and
        ``status`` read the others.

        Raises:
            DamagedRunError: Damage outside the rounds (the run's settings or history): then
                nothing in the file can be trusted.
        """
        damage = self.verify(deep=deep)
        outside = [d for d in damage if d.round is None]
        if outside:
            raise DamagedRunError(damage_message(self.path, damage))
        rounds = sorted({d.round for d in damage if d.round is not None})
        return {r: damage_summary([d for d in damage if d.round == r]) for r in rounds}

    def check_intact(self, under: str = "/", *, deep: bool = False) -> None:
        """Raise :class:`DamagedRunError` naming every damaged part (see :meth:`verify`).

        The start-up check: every byte of the run file itself, and of its round files what
        changed since their datasets were sealed (``deep=False``, see
        ``checksums.verify_file``); a round's sealed simulations and samples are checked
        again whenever they are read (:meth:`read_simulations`), so damage that leaves a
        file's size and modification time alone is still found before it is used.
        ``deep=True`` reads everything (``sbi-rounds verify``).

        A whole file found intact is not checked again by this process while it is
        unchanged (same inode, size and modification time): the command line checks it
        before the flow starts, and the flow's session would otherwise do it a second time.
        """
        key = _file_state(self.path) if under == "/" else None
        if key is not None and _INTACT.get(str(self.path)) == key:
            return
        started = time.time_ns()
        damage = self.verify(under, deep=deep)
        if damage:
            raise DamagedRunError(damage_message(self.path, damage))
        # only a file last written well before (timestamps may tick in milliseconds)
        if key is not None and all(started - state[3] > 50_000_000 for state in key):
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
