"""How a round is cut into chunks: about 64 per round, a fixed size, or timed on a probe."""

from __future__ import annotations

import time

import numpy as np

from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.simulation.calls import call_simulator

__all__ = [
    "AUTO_CHUNKS",
    "MAX_AUTO_CHUNK_SIZE",
    "choose_chunk_size",
    "measure_seconds_per_simulation",
]

#: ``auto`` splits a round into about this many chunks (whatever the number of workers).
AUTO_CHUNKS = 64
#: ``auto`` never puts more simulations than this into one chunk.
MAX_AUTO_CHUNK_SIZE = 1000


def choose_chunk_size(
    cluster: ClusterConfig, num_simulations: int, seconds_per_simulation: float | None = None
) -> int:
    """Simulations per chunk for a round of ``num_simulations``.

    * a number: that many (at most the round).
    * ``auto``: ``ceil(N / 64)``, at most 1000: about 64 chunks per round, which keeps up
      to 64 workers evenly busy and depends on ``N`` only, so a run gives the same
      simulations for any number of workers.
    * ``measure``: as ``auto``, but each chunk lasts at most about
      ``cluster.chunk_seconds`` at the measured speed, and fast simulators may go past
      1000 per chunk. The size depends on a timing, so a fresh run may pick another size
      (and so other simulations); it is stored with the round, and a resume reuses it.

    Args:
        cluster: Holds ``chunk_size`` and ``chunk_seconds``.
        num_simulations: The round's simulation count ``N``.
        seconds_per_simulation: The measured time of one simulation (``measure`` only).

    Raises:
        ValueError: ``measure`` without ``seconds_per_simulation``.
    """
    n = num_simulations
    even = -(-n // AUTO_CHUNKS)
    if isinstance(cluster.chunk_size, int):
        return max(1, min(cluster.chunk_size, n))
    if cluster.chunk_size == "auto":
        return max(1, min(MAX_AUTO_CHUNK_SIZE, even))
    if seconds_per_simulation is None or not seconds_per_simulation > 0:
        raise ValueError(
            "chunk_size='measure' needs the measured seconds per simulation (got "
            f"{seconds_per_simulation!r}); time the simulator with "
            "measure_seconds_per_simulation() first, or set chunk_size to a number or 'auto'"
        )
    by_time = int(cluster.chunk_seconds / seconds_per_simulation)
    return max(1, min(by_time, even))


def measure_seconds_per_simulation(
    sim: SimulatorConfig, theta: np.ndarray, *, x_dim: int | None, seed: int, budget: float = 1.0
) -> float:
    """Time the simulator here on growing batches (1, 2, 4, ... rows of ``theta``).

    Stops once ``budget`` seconds were spent or the rows run out, and returns the time
    per simulation of the last (largest) batch, so import and warm-up costs of the
    first call do not count.

    Args:
        sim: The simulator.
        theta: Probe parameters, with shape ``(M, D)``; e.g. prior draws.
        x_dim: The expected number of summaries (None: any).
        seed: Seed of the probe simulations (their results are thrown away).
        budget: Seconds to spend at most (roughly; one batch may run past it).

    Returns:
        Seconds per simulation (> 0).
    """
    theta = np.asarray(theta)
    if theta.ndim != 2 or len(theta) == 0:
        raise ValueError(f"probe parameters must have shape (M, D) with M >= 1, got {theta.shape}")
    spent, k, per_sim = 0.0, 1, 0.0
    while True:
        t0 = time.perf_counter()
        call_simulator(sim, theta[:k], seed, x_dim)
        seconds = time.perf_counter() - t0
        spent += seconds
        per_sim = seconds / k
        if spent >= budget or k >= len(theta):
            return max(per_sim, 1e-9)
        k = min(2 * k, len(theta))
