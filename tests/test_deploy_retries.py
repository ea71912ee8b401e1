"""Task retries: only transient errors are retried; a deterministic error fails at once."""

from __future__ import annotations

import errno

import pytest
from distributed.comm.core import CommClosedError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.states import Failed

from flows.online import online_inference
from sbi_rounds.simulation import SimulationFailed, SimulatorError
from sbi_rounds.stages import ConfigMismatchError, InvalidRoundError
from sbi_rounds.store import RunFileError
from tasks.rounds import _transient


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("connection reset"),
        TimeoutError("timed out"),
        BlockingIOError(errno.EAGAIN, "resource temporarily unavailable"),
        OSError(errno.ESTALE, "stale file handle"),
        CommClosedError("in <TCP (closed)>: Stream is closed"),
    ],
)
def test_transient_errors_are_retried(error):
    assert _transient(None, None, Failed(data=error))


@pytest.mark.parametrize(
    "error",
    [
        SimulationFailed("chunk 3 failed 3 times", 1, 3),
        SimulatorError("simulator raised ValueError"),
        InvalidRoundError("only 10% valid"),
        ConfigMismatchError("started with other settings"),
        RunFileError("not a run file"),
        FileNotFoundError(errno.ENOENT, "no such file"),
        PermissionError(errno.EACCES, "permission denied"),
        ValueError("bad input"),
        TypeError("bad type"),
        KeyError("missing"),
    ],
)
def test_deterministic_errors_are_not_retried(error):
    assert not _transient(None, None, Failed(data=error))


@pytest.mark.slow
def test_a_simulator_failing_on_the_workers_fails_the_run_without_task_retries(
    make_config, prefect_server
):
    # numpy.linalg.inv passes the 2-sample check (a 2x2 batch is square and invertible) and
    # fails on every chunk of 50: a deterministic error inside the simulate task.
    config = make_config(
        rounds=1,
        simulator={"path": "numpy.linalg:inv"},
        cluster={"workers": 1, "chunk_size": 50, "retries": 1},
    )
    with pytest.raises(SimulationFailed, match="failed 2 times"):
        online_inference(config)
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(limit=1, sort="START_TIME_DESC")
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    (simulate,) = [t for t in task_runs if t.name == "simulate-r1"]
    assert simulate.state.type == StateType.FAILED
    assert simulate.run_count == 1  # the chunk retries ran inside; the task was not rerun
