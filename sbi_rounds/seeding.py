"""Seeds derived from the run seed, so every piece of work is reproducible on its own."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["STAGE_KEYS", "derive_seed", "seeded"]

#: Integer keys of the seeded stages (part of the seed derivation: never renumber).
STAGE_KEYS = {
    "sample": 1,
    "simulate": 2,
    "train": 3,
    "posterior": 4,
    "split": 5,
    "probe": 6,
    "calibration": 7,
    "predictive": 8,
    "leakage": 9,
    "selection": 10,
}


def derive_seed(run_seed: int, *keys: int | str) -> int:
    """A 63-bit seed for ``(run_seed, *keys)``, e.g. ``derive_seed(0, round, "simulate", chunk)``.

    Uses numpy's ``SeedSequence`` so seeds of different keys are statistically independent.
    String keys must be in :data:`STAGE_KEYS`.
    """
    spawn_key = tuple(STAGE_KEYS[k] if isinstance(k, str) else int(k) for k in keys)
    seq = np.random.SeedSequence(entropy=run_seed, spawn_key=spawn_key)
    low, high = (int(v) for v in seq.generate_state(2, dtype=np.uint32))
    return ((high << 32) | low) >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and ``random`` inside the block and restore their states after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
