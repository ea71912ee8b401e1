"""The run file's layout: format version, round stages, timings, and how a round is stored.

Format 2 (this version writes it): a round's bulk arrays live in files of their own in the
folder the run file names (``rounds/`` beside it; beside it in run files made before),
reached from its round group through HDF5 external links, so the run file stays small and
its copy-on-write commits cost what they change:

* ``<stem>.round-NNNN.h5`` (:func:`data_file_name`): parameters and their mark, validity,
  chunk marks and seconds, posterior samples and their mark (:data:`DATA_FILE_DATASETS`),
  allocated in full when the round is planned;
* ``<stem>.round-NNNN.x.h5`` (:func:`x_file_name`): the simulations, in the dtype the
  simulator returned (or the configured one), linked when the round is planned and created
  (whole, under a temporary name) then too when that dtype is known, else when the first
  chunk is committed. Until then the link leads nowhere, which means: no simulation
  committed yet.

Both are written in place only (no HDF5 metadata changes after they are created). Format 1
kept everything in the run file; its rounds are read as they are (see ``files``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RETIRED_SETTINGS",
    "TIMED_STAGES",
    "RoundInfo",
    "RunFileError",
    "Stage",
    "DATA_FILE_DATASETS",
    "allocate",
    "data_file_name",
    "data_layout",
    "fsync_path",
    "storage_dtype",
    "retire_settings",
    "round_group",
    "versions",
    "x_file_name",
]

FORMAT = "sbi-rounds-run"
FORMAT_VERSION = 2

#: A round's datasets in its data file (format 2); ``x`` is in a file of its own
#: (:func:`x_file_name`). Their shapes, dtypes and fill values: :func:`data_layout`.
DATA_FILE_DATASETS = (
    "theta",
    "theta_done",
    "valid",
    "chunk_done",
    "chunk_seconds",
    "posterior_samples",
    "samples_done",
)


def data_layout(
    num_simulations: int, theta_dim: int, num_chunks: int, num_posterior_samples: int
) -> dict[str, tuple[tuple[int, ...], Any, Any]]:
    """``{name: (shape, dtype, fill)}`` of a round's :data:`DATA_FILE_DATASETS`."""
    return {
        "theta": ((num_simulations, theta_dim), np.float32, np.nan),
        "theta_done": ((), np.int64, 0),
        "valid": ((num_simulations,), np.uint8, 0),
        "chunk_done": ((num_chunks,), np.uint8, 0),
        "chunk_seconds": ((num_chunks,), np.float64, np.nan),
        "posterior_samples": ((num_posterior_samples, theta_dim), np.float32, np.nan),
        "samples_done": ((), np.int64, 0),
    }


#: Settings that older versions stored and this one no longer has (they did nothing), as
#: paths in the stored configuration; dropped when a run's settings are read.
RETIRED_SETTINGS = (("training", "progress"),)


def retire_settings(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a stored configuration) without :data:`RETIRED_SETTINGS`."""
    for *parents, key in RETIRED_SETTINGS:
        section: Any = config
        for p in parents:
            section = section.get(p) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(key, None)
    return config


class Stage(IntEnum):
    """How far a round got. Each value is committed only after its work is on disk.

    Examples:
        >>> Stage.TRAINED < Stage.DONE
        True
        >>> [stage.name for stage in Stage][:3]
        ['PLANNED', 'SAMPLED', 'SIMULATED']
    """

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


def round_group(round_: int) -> str:
    return f"rounds/{round_:04d}"


def data_file_name(run_file: Path, round_: int, generation: int = 0, folder: str = "") -> str:
    """The path, relative to ``run_file``'s directory, of a round's data file in ``folder``
    (``""``: beside it; a repair writes generation 1, 2, ... of it)."""
    suffix = f".{generation}" if generation else ""
    return _in_folder(folder, f"{run_file.stem}.round-{round_:04d}{suffix}.h5")


def x_file_name(run_file: Path, round_: int, generation: int = 0, folder: str = "") -> str:
    """The path, relative to ``run_file``'s directory, of the file in ``folder`` that holds a
    round's simulations (a repair links generation 1, 2, ... of it)."""
    suffix = f".{generation}" if generation else ""
    return _in_folder(folder, f"{run_file.stem}.round-{round_:04d}.x{suffix}.h5")


def _in_folder(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def storage_dtype(simulated: np.dtype, requested: str = "auto") -> np.dtype:
    """The dtype simulations are stored in: ``requested``, or for ``"auto"`` the one the
    simulator returned when it is float32 or float64 (float16 widens to float32, anything
    else to float64)."""
    if requested != "auto":
        return np.dtype(requested)
    if simulated in (np.float16, np.float32):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def allocate(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> None:
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


def versions() -> dict[str, str]:
    import sbi

    return {
        "sbi": sbi.__version__,
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }
