"""Checks of the machine a run starts on: the training device, the run directory, free disk.

They run before Prefect and Dask start (``sbi_rounds.lifecycle.preflight.preflight``), so a run that
cannot finish fails in a second with one line instead of after a round was simulated.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch

from sbi_rounds.config import RunConfig

__all__ = [
    "DISK_ERRORS",
    "check_device",
    "check_run_directory",
    "check_run_writable",
    "disk_space",
    "disk_space_text",
    "is_disk_error",
    "is_disk_full",
    "planned_round_bytes",
]


def check_device(device: str) -> None:
    """Refuse a training device this machine does not have.

    Raises:
        ValueError: ``cuda``/``cuda:N`` without that CUDA device, ``mps`` without MPS.
    """
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise ValueError(
                f"training.device={device!r} but this machine has "
                f"{'no CUDA device' if count == 0 else f'{count} CUDA device(s)'}; use "
                "--device cpu, or run where the GPU is"
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("training.device='mps' but MPS is not available here; use --device cpu")


def planned_round_bytes(config: RunConfig, round_: int) -> int:
    """About how many bytes round ``round_`` adds to the run file (its preallocated data,
    with room for the network and checkpoints)."""
    n = config.simulations_for_round(round_)
    d = len(config.prior.low) if config.prior.low is not None else 8
    k = len(config.xobs)
    data = n * (4 * d + 8 * k + 1) + config.posterior_samples_for_round(round_) * 4 * d
    return data + 2_000_000  # network weights, checkpoints and metadata


def check_run_directory(config: RunConfig, round_: int = 1) -> None:
    """Refuse a run directory that cannot be created or written, or a disk too full for
    the next round (a structural commit also needs room for a copy of the run file).

    Raises:
        ValueError: The message names the directory and what is wrong.
    """
    directory = config.run_path.parent
    existing = _existing(directory)
    if not existing.is_dir():
        raise ValueError(
            f"cannot create the run directory {directory}: {existing} is a file, not a "
            "directory; choose another --run-dir"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write to the run directory {existing} (permission denied); choose "
            "another --run-dir or make it writable"
        )
    free, needed, where = disk_space(config, round_)
    if free < needed:
        raise ValueError(
            f"not enough free disk for the run in {where}: {_space(free, needed, round_)}; free "
            "some space or choose another --run-dir"
        )


def check_run_writable(directory: Path) -> None:
    """Refuse to resume a run whose directory this process cannot write (a read-only file
    system, an archive, another user's run): one line, before anything is opened for
    writing.

    Raises:
        ValueError: The message names the directory and what still works.
    """
    if os.access(directory, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "on a read-only file system" if read_only else "not writable by this user"
    raise ValueError(
        f"the run directory {directory} is read-only ({why}): a run cannot be resumed or "
        "extended there. Reading it needs no write access (sbi-rounds status, export, "
        "verify, report -o FILE elsewhere); to resume, copy the run's directory to a "
        "writable --run-dir and rerun the command with that --run-dir"
    )


def _existing(directory: Path) -> Path:
    """``directory``, or its closest ancestor that exists."""
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    return directory


def disk_space(config: RunConfig, round_: int) -> tuple[int, int, Path]:
    """``(free, needed, where)``: the free bytes of the run directory's file system (measured
    in ``where``, the directory or its closest existing ancestor), and about how many round
    ``round_`` needs: its data, and a copy of the run file for committing."""
    where = _existing(config.run_path.parent)
    run_file = config.run_path
    current = run_file.stat().st_size if run_file.exists() else 0
    return shutil.disk_usage(where).free, current + planned_round_bytes(config, round_), where


def disk_space_text(config: RunConfig, round_: int | None = None) -> str:
    """The free and needed disk space of :func:`disk_space`, for a person; ``round_`` None:
    the round a resume of the run plans first (as
    ``sbi_rounds.lifecycle.session.preflight`` checks)."""
    if round_ is None:
        from sbi_rounds.store import RunStore

        path = config.run_path
        planned = RunStore.open(path).rounds() if path.exists() else []
        round_ = min(max(planned, default=0) + 1, config.rounds)
    free, needed, where = disk_space(config, round_)
    return f"{_space(free, needed, round_)}, in {where}"


def _space(free: int, needed: int, round_: int) -> str:
    return (
        f"{free / 1e6:.1f} MB free, about {needed / 1e6:.1f} MB needed for round {round_} (its "
        "data and a copy of the run file for committing)"
    )


#: Errors of the disk or the file system a run writes to, with the text the system gives them.
DISK_ERRORS = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
    errno.EFBIG: "File too large",
    errno.EACCES: "Permission denied",
    errno.EROFS: "Read-only file system",
    errno.EIO: "Input/output error",
}


def is_disk_error(e: BaseException) -> bool:
    """An error of the disk or file system (also as h5py reports HDF5's: a ValueError or
    RuntimeError whose message holds the system's error)."""
    if not isinstance(e, (OSError, ValueError, RuntimeError)):
        return False
    if isinstance(e, OSError) and e.errno in DISK_ERRORS:
        return True
    return any(text in str(e) for text in DISK_ERRORS.values())


def is_disk_full(e: BaseException) -> bool:
    """A full disk, an exhausted quota or a file size limit (of :func:`is_disk_error`)."""
    full = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if isinstance(e, OSError) and e.errno in full:
        return True
    return isinstance(e, (OSError, ValueError, RuntimeError)) and any(
        DISK_ERRORS[n] in str(e) for n in full
    )
