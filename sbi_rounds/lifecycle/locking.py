"""One writer per run: an OS file lock with the holder's PID, host and start time."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RunLock", "RunLockedError", "holder_text"]

#: Why a lock file cannot be opened for writing: a read-only file system, or permissions.
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class RunLockedError(RuntimeError):
    """Another live process holds the run."""


class RunLock:
    """An exclusive lock on ``<run dir>/run.lock``, released when the process ends.

    The lock is a POSIX record lock (``fcntl.lockf``): the kernel drops it when its holder
    dies, even by SIGKILL, so a lock left by a dead process is taken over safely; the PID,
    host and time of the previous holder are reported in ``previous_holder``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.previous_holder: dict[str, object] | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(_locked_message(self.path, holder)) from None
        previous = _read_holder(fd)
        self.previous_holder = previous or None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def check(self) -> None:
        """Raise :class:`RunLockedError` if another live process holds the lock; take nothing.

        For a quick check before a run starts, and for readers: nothing is written. In a
        read-only run (file system or permissions) the lock file is opened for reading and
        tested with a shared lock, which a holder's exclusive lock refuses. Call it before
        :meth:`acquire`, never while this process holds the lock: closing any descriptor
        of the lock file drops the POSIX locks the process holds on it.
        """
        if self._fd is not None:
            return
        try:
            fd, mode = os.open(self.path, os.O_RDWR), fcntl.LOCK_EX
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in _NOT_WRITABLE:
                raise
            try:
                fd, mode = os.open(self.path, os.O_RDONLY), fcntl.LOCK_SH
            except FileNotFoundError:
                return
        try:
            fcntl.lockf(fd, mode | fcntl.LOCK_NB)
        except OSError:
            raise RunLockedError(_locked_message(self.path, _read_holder(fd))) from None
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> dict[str, object] | None:
        """The live process holding the lock (``pid``, ``host``, ``since``), or None.

        Takes nothing; like :meth:`check`, never call it while this process holds the lock.
        """
        try:
            self.check()
        except RunLockedError:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                return _read_holder(fd)
            finally:
                os.close(fd)
        return None

    def release(self) -> None:
        """Release the lock (idempotent). The file stays, emptied, for the next holder."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def holder_text(holder: dict[str, object]) -> str:
    """``PID 123 on host h since 2026-12-07 14:02:03``: a lock holder, for a person."""
    since = holder.get("since")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        if isinstance(since, (int, float))
        else "?"
    )
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"


def _locked_message(path: Path, holder: dict[str, object]) -> str:
    return (
        f"run {path.parent} is in use by {holder_text(holder)}. Wait for it to finish or stop it "
        "(Ctrl-C / kill PID), then rerun the same command to resume; or use another "
        "--run-id."
    )


def _read_holder(fd: int) -> dict[str, object]:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}
