"""Checks of the machine a run starts on: the training device, the run directory, free disk.

They run before Prefect and Dask start (``sbi_rounds.preflight.preflight``), so a run that
cannot finish fails in a second with one line instead of after a round was simulated.
"""

from __future__ import annotations

import os
import shutil

import torch

from sbi_rounds.config import RunConfig

__all__ = ["check_device", "check_run_directory", "planned_round_bytes"]


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
    data = n * (4 * d + 8 * k + 1) + config.posterior.num_samples * 4 * d
    return data + 2_000_000  # network weights, checkpoints and metadata


def check_run_directory(config: RunConfig, round_: int = 1) -> None:
    """Refuse a run directory that cannot be created or written, or a disk too full for
    the next round (a structural commit also needs room for a copy of the run file).

    Raises:
        ValueError: The message names the directory and what is wrong.
    """
    directory = config.run_path.parent
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
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
    run_file = config.run_path
    current = run_file.stat().st_size if run_file.exists() else 0
    needed = current + planned_round_bytes(config, round_)
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ValueError(
            f"not enough free disk for the run in {existing}: {free / 1e6:.1f} MB free, about "
            f"{needed / 1e6:.1f} MB needed for round {round_} (its data and a copy of the run "
            "file for committing); free some space or choose another --run-dir"
        )
