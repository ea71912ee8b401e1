"""The command-line settings of the smallest run the end-to-end tests make (one module for
every test file that runs the command line; ``conftest`` puts ``tests/`` on the path)."""

from __future__ import annotations

__all__ = ["SMALL"]

#: One round of 100 simulations in two chunks, a tiny network trained two epochs, 50
#: posterior samples, one worker, no logger or progress bar.
SMALL = [
    "--rounds",
    "1",
    "--simulations-per-round",
    "100",
    "--chunk-size",
    "50",
    "--max-epochs",
    "2",
    "--hidden-features",
    "10",
    "--num-transforms",
    "1",
    "--num-samples",
    "50",
    "--workers",
    "1",
    "--logger",
    "none",
    "--no-progress",
]
