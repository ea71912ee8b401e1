"""The Dask task of one chunk of simulations, light for the scheduler to unpickle.

Dask's scheduler unpickles every task it receives. A task that held
``sbi_rounds.simulation.run_chunk`` and a ``SimulatorConfig`` made the scheduler import torch
(seconds) before it could schedule the first chunk of a run. This one holds only a function
of this module (no third-party import) and plain data; the worker imports the simulation
code when it runs the chunk (and has it imported already: the cluster warms its workers up).
"""

from __future__ import annotations

from typing import Any

__all__ = ["simulate_chunk", "simulate_chunks"]


def simulate_chunk(
    simulator: dict[str, Any],
    theta: Any,
    seed: int,
    x_dim: int,
    timeout: float | None = None,
) -> tuple[Any, float, str]:
    """Simulate one chunk on a worker: :func:`sbi_rounds.simulation.run_chunk`.

    Args:
        simulator: The ``SimulatorConfig`` as ``model_dump(mode="json")``.
        theta: The chunk's parameters, a NumPy array with shape ``(n, D)``.
        seed: The chunk's seed.
        x_dim: The number of summaries ``K``.
        timeout: The chunk timeout (an external program is killed after it).

    Returns:
        ``(x, seconds, "host:pid")`` with ``x`` of shape ``(n, K)``.
    """
    from sbi_rounds.config import SimulatorConfig
    from sbi_rounds.simulation.calls import run_chunk

    return run_chunk(SimulatorConfig.model_validate(simulator), theta, seed, x_dim, timeout)


def simulate_chunks(
    simulator: dict[str, Any],
    chunks: list[tuple[Any, int]],
    x_dim: int,
    timeout: float | None = None,
) -> list[tuple[Any, float, str]]:
    """Simulate several chunks in one task, one after the other (each with its own seed, so
    the results are those of one task per chunk): for chunks so fast that a task per chunk
    would cost more in Dask's round trips than in simulating.

    Args:
        simulator: As :func:`simulate_chunk`.
        chunks: ``(theta (n, D), seed)`` of each chunk.
        x_dim: The number of summaries ``K``.
        timeout: The timeout of each chunk.

    Returns:
        ``(x, seconds, "host:pid")`` of each chunk, in order.
    """
    from sbi_rounds.config import SimulatorConfig
    from sbi_rounds.simulation.calls import run_chunk

    sim = SimulatorConfig.model_validate(simulator)
    return [run_chunk(sim, theta, seed, x_dim, timeout) for theta, seed in chunks]
