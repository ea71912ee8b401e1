"""sbi-rounds: resumable multi-round simulation-based inference with sbi, Dask and HDF5.

The names of ``__all__`` resolve on first use, so ``import sbi_rounds`` stays light.

Examples:
    >>> import sbi_rounds
    >>> config = sbi_rounds.RunConfig(xobs=[0.5, -0.3], rounds=2)
    >>> config.method, config.rounds
    ('snpe', 2)
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CancelToken",
    "RunConfig",
    "RunStore",
    "Stage",
    "TrainConfig",
    "load_posterior",
    "load_run",
    "run_round",
    "run_session",
    "run_training",
]
__version__ = "0.1.0"

# Names resolve on first use, so light submodules (the Dask worker's watchdog and
# simulation entry point) import without pulling in sbi.
_LAZY = {
    "CancelToken": "sbi_rounds.runtime.cancel",
    "RunConfig": "sbi_rounds.config",
    "RunStore": "sbi_rounds.store",
    "Stage": "sbi_rounds.store",
    "TrainConfig": "sbi_rounds.training",
    "run_training": "sbi_rounds.training",
    "load_posterior": "sbi_rounds.report.results",
    "load_run": "sbi_rounds.report.results",
    "run_round": "sbi_rounds.stages.round",
    "run_session": "sbi_rounds.lifecycle.session",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sbi_rounds' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
