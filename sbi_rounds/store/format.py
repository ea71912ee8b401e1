"""The run file's layout: format version, round stages, timings, and how a round is stored."""

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
    "allocate",
    "fsync_path",
    "retire_settings",
    "round_group",
    "versions",
]

FORMAT = "sbi-rounds-run"
FORMAT_VERSION = 1

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


def round_group(round_: int) -> str:
    return f"rounds/{round_:04d}"


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
