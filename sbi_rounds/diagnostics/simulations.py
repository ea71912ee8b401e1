"""Simulations made for the checks, on Dask through ``simulate_round``, kept resumable.

Posterior predictive and calibration simulations go through exactly the path a round's
own simulations take (``simulation.ledger``: planned, then chunks on Dask, seeds per chunk,
retries, timeouts, failures saved, a stop request honoured), into a second file in the
run's directory, ``checks/diagnostics.h5`` (``RunLayout.checks_file``). It has the run
file's format (it is a ``RunStore``): each set of check simulations is one planned "round"
there, its chunks committed as they finish, so an interrupted check resumes without redoing
a finished chunk. The results of the checks go into the run file; ``diagnostics.h5`` holds
only their raw simulations and can be deleted (the next session simulates them again, with
the same seeds).

Sets: the predictive check of round ``r`` is set ``r``; calibration is set
:data:`CALIBRATION_SET`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbi_rounds.config import RunConfig
from sbi_rounds.simulation import plan_round, simulate_round
from sbi_rounds.store import RunStore, Stage
from sbi_rounds.store.layout import RunLayout

__all__ = ["CALIBRATION_SET", "CheckSimulations", "SimulatedSet"]

log = logging.getLogger(__name__)

#: The set number of the calibration simulations (predictive sets are the round numbers).
CALIBRATION_SET = 0


@dataclass(frozen=True, kw_only=True)
class SimulatedSet:
    """A finished set of check simulations.

    Attributes:
        theta: The parameters, with shape ``(N, D)``.
        x: Their simulations, with shape ``(N, K)``; invalid rows are NaN or infinite.
        simulated_now: Simulations run by this call (0 when all were committed before).
    """

    theta: np.ndarray
    x: np.ndarray
    simulated_now: int


class CheckSimulations:
    """The checks' simulation sets of one run, in ``<run dir>/checks/diagnostics.h5``
    (``diagnostics.h5`` in a run of the flat layout), its round files beside it.

    Writers must hold the run's lock (the stages run inside ``run_session``).

    Args:
        layout: The run directory's layout.
        config: The run's settings (simulator, cluster, seed).
        fingerprint: The run file's fingerprint, stored for reference.
    """

    def __init__(self, layout: RunLayout, config: RunConfig, fingerprint: str) -> None:
        self.path = layout.checks_file
        self.config = config
        self.fingerprint = fingerprint
        self._store: RunStore | None = None

    def store(self) -> RunStore:
        """The ``RunStore`` of ``diagnostics.h5``, created on first use."""
        if self._store is None:
            if self.path.exists():
                store = RunStore.open(self.path)
                for stale in store.remove_stale_temporaries():
                    log.info("removed %s left by an interrupted commit", stale.name)
            else:
                store = RunStore.create(
                    self.path,
                    config={
                        "purpose": "simulations of the posterior checks of run.h5",
                        "run_fingerprint": self.fingerprint,
                    },
                    fingerprint=self.fingerprint,
                    bulk_folder="",  # its round files beside it, in its own folder
                )
            self._store = store
        return self._store

    def committed(self, number: int) -> bool:
        """Whether set ``number`` is simulated completely."""
        if not self.path.exists():
            return False
        stage = self.store().stage(number)
        return stage is not None and stage >= Stage.SIMULATED

    def _plan(
        self,
        store: RunStore,
        number: int,
        theta: np.ndarray,
        x_dim: int,
        description: Mapping[str, Any],
        seconds_per_simulation: float | None,
    ) -> None:
        """Plan set ``number`` in ``store``: ``len(theta)`` simulations of ``theta`` with shape
        ``(N, D)``, and their chunk size."""
        plan_round(
            store,
            number,
            cluster=self.config.cluster,
            seconds_per_simulation=seconds_per_simulation,
            num_simulations=len(theta),
            theta_dim=theta.shape[1],
            x_dim=x_dim,
            num_posterior_samples=1,
            proposal=dict(description),
            x_dtype=self.config.x_dtype,
        )

    def simulate(
        self,
        number: int,
        theta: np.ndarray,
        *,
        x_dim: int,
        run_seed: int,
        client: Any,
        description: Mapping[str, Any],
        seconds_per_simulation: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> SimulatedSet | None:
        """Simulate set ``number`` (what is not committed yet) and return it.

        A set planned by an earlier session keeps its parameters; a different ``theta``
        (changed settings) is ignored with a log message, so a resumed check finishes
        the simulations it started.

        Args:
            number: The set (a round for predictive checks, :data:`CALIBRATION_SET`).
            theta: The parameters to simulate, with shape ``(N, D)``.
            x_dim: The number of summary statistics ``K``.
            run_seed: Chunk ``c`` gets ``derive_seed(run_seed, number, "simulate", c)``;
                give a seed of its own per kind of check.
            client: A ``distributed.Client``, or a function returning one (called only
                when chunks are left to simulate).
            description: Stored with the set, e.g. ``{"kind": "posterior_predictive"}``.
            seconds_per_simulation: For ``cluster.chunk_size="measure"``.
            should_stop: Polled while simulating; True stops (None is returned).
            progress: ``progress(done, total, simulations_per_second)`` after each chunk.

        Returns:
            The set, or None when ``should_stop`` stopped the simulations.
        """
        cfg = self.config
        store = self.store()
        theta = np.asarray(theta, dtype=np.float32)
        if store.stage(number) is None:
            self._plan(store, number, theta, x_dim, description, seconds_per_simulation)
        info = store.round_info(number)
        if info.num_simulations != len(theta):
            log.info(
                "check simulations %d: keeping the %d parameter sets planned before (%d asked now)",
                number,
                info.num_simulations,
                len(theta),
            )
        elif info.theta_done < info.num_simulations:
            store.write_theta(number, 0, theta)
            store.set_stage(number, Stage.SAMPLED)
        simulated = 0
        if store.stage(number) < Stage.SIMULATED:
            report = simulate_round(
                store,
                number,
                simulator=cfg.simulator,
                cluster=cfg.cluster,
                client=client if hasattr(client, "submit") else client(),
                run_seed=run_seed,
                progress=progress,
                should_stop=should_stop,
            )
            simulated = report.simulations_run
            if report.stopped:
                return None
            store.set_stage(number, Stage.SIMULATED)
        theta_all, x, _ = store.read_simulations(number)
        return SimulatedSet(theta=theta_all, x=x, simulated_now=simulated)
