"""Simulation on Dask: simulator kinds, the command protocol, chunking, commits and faults."""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sbi_rounds import stages
from sbi_rounds.cluster import open_client
from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.seeding import derive_seed
from sbi_rounds.simulation import (
    SimulationFailed,
    SimulatorError,
    call_simulator,
    choose_chunk_size,
    measure_seconds_per_simulation,
    simulate_round,
)
from sbi_rounds.stages import Appended, InvalidRoundError, run_session
from sbi_rounds.store import RoundCounts, RunStore

EXAMPLES = Path(__file__).parents[1] / "sbi_rounds" / "examples_command"
PY_COMMAND = [
    sys.executable,
    "-m",
    "sbi_rounds.examples_command.linear_gaussian",
    "{input}",
    "{output}",
    "{seed}",
]


def _store(
    tmp_path: Path, n: int = 40, chunk_size: int = 5, dim: int = 2, x_dim: int | None = None
) -> RunStore:
    """A real run file with one planned round whose parameters are sampled."""
    store = RunStore.create(tmp_path / f"run-{time.time_ns()}.h5", config={}, fingerprint="t")
    store.plan_round(
        1,
        num_simulations=n,
        theta_dim=dim,
        x_dim=x_dim or dim,
        chunk_size=chunk_size,
        num_posterior_samples=10,
        proposal={"kind": "test"},
    )
    store.write_theta(1, 0, np.random.default_rng(0).uniform(-2, 2, (n, dim)))
    return store


def _reference(store: RunStore, sim: SimulatorConfig, seed: int = 0) -> np.ndarray:
    """The round's simulations computed here, chunk by chunk with the chunks' seeds."""
    info = store.round_info(1)
    theta = store.read_theta(1)
    return np.concatenate(
        [
            call_simulator(
                sim,
                theta[slice(*info.chunk_bounds(c))],
                derive_seed(seed, 1, "simulate", c),
                info.x_dim,
            )
            for c in range(info.num_chunks)
        ]
    )


@pytest.fixture(scope="module")
def c_simulator(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The example C simulator, compiled here."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc or gcc) to build the example C simulator")
    exe = tmp_path_factory.mktemp("csim") / "linear_gaussian"
    subprocess.run(
        [cc, "-O2", "-o", str(exe), str(EXAMPLES / "linear_gaussian.c"), "-lm"],
        check=True,
        capture_output=True,
    )
    return str(exe)


KINDS = {
    "batched-torch": SimulatorConfig(path="sbi_rounds.examples:linear_gaussian"),
    "batched-numpy": SimulatorConfig(path="test_simulation_helpers:numpy_batched"),
    "per_sample": SimulatorConfig(
        path="sbi_rounds.examples:linear_gaussian_single", kind="per_sample"
    ),
    "command-python": SimulatorConfig(kind="command", path=None, command=PY_COMMAND),
}


def _kind(name: str, c_simulator: str | None = None) -> SimulatorConfig:
    if name == "command-c":
        return SimulatorConfig(
            kind="command", path=None, command=[c_simulator, "{input}", "{output}", "{seed}"]
        )
    return KINDS[name]


# --- calling simulators -----------------------------------------------------------------
@pytest.mark.parametrize("kind", [*KINDS, "command-c"])
def test_every_kind_returns_float_rows_that_depend_on_the_seed_only(kind, request):
    c_sim = request.getfixturevalue("c_simulator") if kind == "command-c" else None
    sim = _kind(kind, c_sim)
    theta = np.random.default_rng(1).uniform(-2, 2, (7, 3)).astype(np.float32)
    a = call_simulator(sim, theta, seed=11, x_dim=3)
    b = call_simulator(sim, theta, seed=11, x_dim=3)
    c = call_simulator(sim, theta, seed=12, x_dim=3)
    # float32 stays float32 (a torch simulator's), to be stored so; the rest is float64
    assert a.dtype in (np.float32, np.float64) and a.shape == (7, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.abs(a - theta).max() < 1.0  # x = theta + 0.1 noise


def test_the_seed_keyword_receives_the_chunk_seed():
    sim = SimulatorConfig(path="test_simulation_helpers:seed_echo")
    x = call_simulator(sim, np.zeros((3, 2)), seed=2**62 + 5, x_dim=1)
    np.testing.assert_array_equal(x, np.full((3, 1), float((2**62 + 5) % 1000003)))


def test_command_placeholders_and_environment(tmp_path):
    # The script's own braces ({r[0]}, {a[2]}) are not placeholders and stay as they are.
    script = (
        "import os, sys, numpy as np; a = sys.argv[1:]; "
        "t = np.loadtxt(a[0], delimiter=',', ndmin=2); "
        "assert a[2] == os.environ['SBI_ROUNDS_SEED'] and int(a[3]) == len(t); "
        "f = open(a[1], 'w'); f.write('# a comment line\\n'); "
        "[f.write(f'{r[0]},{a[2]},1\\n') for r in t]"
    )
    sim = SimulatorConfig(
        kind="command",
        path=None,
        command=[sys.executable, "-c", script, "{input}", "{output}", "{seed}", "{n}"],
    )
    theta = np.array([[0.25, 1.0], [-1.5, 2.0]], dtype=np.float32)
    x = call_simulator(sim, theta, seed=42, x_dim=3)
    np.testing.assert_array_equal(x, [[0.25, 42, 1], [-1.5, 42, 1]])
    # Without placeholders the two paths come last.
    appended = SimulatorConfig(
        kind="command",
        path=None,
        command=[sys.executable, "-m", "sbi_rounds.examples_command.linear_gaussian"],
    )
    assert call_simulator(appended, theta, seed=1, x_dim=2).shape == (2, 2)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "import sys; sys.stderr.write('boom'); sys.exit(3)",
            r"exited with status 3\nstderr:\nboom",
        ),
        ("pass", "wrote no output file"),
        ("import sys; open(sys.argv[2], 'w').write('1,2\\n3\\n')", "not CSV numbers"),
        (
            "import sys; open(sys.argv[2], 'w').write('1,2,3\\n4,5,6\\n')",
            r"shape \(2, 3\).*\(2, 2\)",
        ),
        ("import time; time.sleep(30)", r"killed after 0.5 s \(cluster.chunk_timeout\)"),
    ],
)
def test_command_errors_say_what_went_wrong(code, message):
    sim = SimulatorConfig(kind="command", path=None, command=[sys.executable, "-c", code])
    with pytest.raises(SimulatorError, match=message):
        call_simulator(sim, np.zeros((2, 2)), seed=0, x_dim=2, timeout=0.5)


def test_command_placeholder_mistakes_and_missing_programs():
    only_input = SimulatorConfig(kind="command", path=None, command=["prog", "{input}"])
    with pytest.raises(SimulatorError, match="has {input} but not the other"):
        call_simulator(only_input, np.zeros((1, 2)), seed=0)
    missing = SimulatorConfig(kind="command", path=None, command=["/no/such/simulator"])
    with pytest.raises(SimulatorError, match="could not start .* absolute path"):
        call_simulator(missing, np.zeros((1, 2)), seed=0)


def test_python_simulator_errors_carry_the_traceback_and_shape_hints():
    raising = SimulatorConfig(path="test_simulation_helpers:fail_above", kwargs={"threshold": 0})
    with pytest.raises(SimulatorError, match=r"(?s)raised ValueError: parameter 1.000.*Traceback"):
        call_simulator(raising, np.ones((2, 2)), seed=0, x_dim=2)
    wrong = SimulatorConfig(path="test_simulation_helpers:wrong_shape")
    with pytest.raises(SimulatorError, match=r"shape \(2, 3\).*must return 2 summaries"):
        call_simulator(wrong, np.ones((2, 2)), seed=0, x_dim=2)


# --- chunk sizes --------------------------------------------------------------------------
def test_chunk_sizes():
    auto = ClusterConfig()
    assert [choose_chunk_size(auto, n) for n in (1, 2, 64, 65, 1000, 10**6)] == [
        1,
        1,
        1,
        2,
        16,
        1000,
    ]
    assert choose_chunk_size(ClusterConfig(chunk_size=50), 30) == 30
    measure = ClusterConfig(chunk_size="measure", chunk_seconds=2.0)
    assert choose_chunk_size(measure, 1000, seconds_per_simulation=0.5) == 4  # 2 s per chunk
    assert choose_chunk_size(measure, 1000, seconds_per_simulation=1e-6) == 16  # >= 64 chunks
    assert choose_chunk_size(measure, 10**6, seconds_per_simulation=1e-6) == 15625
    with pytest.raises(ValueError, match="needs the measured seconds per simulation"):
        choose_chunk_size(measure, 1000)


def test_measuring_the_simulator_time():
    sim = SimulatorConfig(
        path="sbi_rounds.examples:slow_linear_gaussian", kwargs={"seconds_per_simulation": 0.01}
    )
    theta = np.zeros((64, 2), dtype=np.float32)
    seconds = measure_seconds_per_simulation(sim, theta, x_dim=2, seed=0, budget=0.3)
    assert 0.008 < seconds < 0.05


# --- sending rounds to Dask ---------------------------------------------------------------
def test_a_round_is_committed_chunk_by_chunk_with_results_independent_of_workers(
    tmp_path, dask_client
):
    store = _store(tmp_path, n=40, chunk_size=3)
    sim = KINDS["batched-torch"]
    seen = []
    report = simulate_round(
        store,
        1,
        simulator=sim,
        cluster=ClusterConfig(commit_interval=0),
        client=dask_client,
        run_seed=0,
        progress=lambda *a: seen.append(a),
    )
    # commit_interval=0 promises one commit per chunk, also for chunks seen finished together
    assert len(seen) == 14
    assert report.chunks_run == 14 and report.simulations_run == 40 and not report.stopped
    assert sum(report.chunks_by_worker.values()) == 14
    assert store.pending_chunks(1) == []
    assert [s[0] for s in seen] == sorted(s[0] for s in seen) and seen[-1][:2] == (40, 40)
    assert all(rate > 0 for *_, rate in seen)
    _, x, valid = store.read_simulations(1)
    assert valid.all()
    np.testing.assert_array_equal(x, _reference(store, sim))
    assert (store.chunk_seconds(1) > 0).all()
    again = simulate_round(
        store, 1, simulator=sim, cluster=ClusterConfig(), client=dask_client, run_seed=0
    )
    assert again.chunks_run == 0 and again.chunks_skipped == 14


def test_fast_chunks_go_several_to_a_task_with_the_same_results(tmp_path, dask_client):
    store = _store(tmp_path, n=1200, chunk_size=2)  # 600 chunks of an instant simulator
    sim = KINDS["batched-torch"]
    report = simulate_round(
        store, 1, simulator=sim, cluster=ClusterConfig(), client=dask_client, run_seed=0
    )
    assert report.chunks_run == 600 and report.tasks < 300, report
    assert store.pending_chunks(1) == [] and sum(report.chunks_by_worker.values()) == 600
    np.testing.assert_array_equal(store.read_simulations(1)[1], _reference(store, sim))


def test_a_chunk_failing_in_a_task_of_several_fails_alone(tmp_path, dask_client, caplog):
    """Its task's other chunks are sent again one per task and committed; only the failing
    chunk counts attempts, is retried and named."""
    store = _store(tmp_path, n=1200, chunk_size=2)
    theta = store.read_theta(1)
    theta[:, 0] = -1.0
    theta[1001, 0] = 1.5  # chunk 500 fails
    store.write_theta(1, 0, theta)
    sim = SimulatorConfig(path="test_simulation_helpers:fail_above", kwargs={"threshold": 1.0})
    with caplog.at_level(logging.WARNING), pytest.raises(SimulationFailed) as info:
        simulate_round(
            store,
            1,
            simulator=sim,
            cluster=ClusterConfig(retries=1, max_in_flight=1),
            client=dask_client,
            run_seed=0,
        )
    assert info.value.chunk == 500 and "chunk 500 (rows 1000-1001) failed 2 times" in str(
        info.value
    )
    retried = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert retried and all("chunk 500 failed" in m for m in retried), retried
    assert list(store.failures(1)) == [500]
    assert store.pending_chunks(1)[0] == 500  # every chunk before it was committed


def test_a_stopped_round_resumes_with_only_the_missing_chunks(tmp_path, dask_client):
    store = _store(tmp_path, n=24, chunk_size=2)
    sim = SimulatorConfig(
        path="test_simulation_helpers:sleepy", kwargs={"seconds_per_simulation": 0.05}
    )
    done = []
    first = simulate_round(
        store,
        1,
        simulator=sim,
        cluster=ClusterConfig(max_in_flight=2, commit_interval=0),
        client=dask_client,
        run_seed=3,
        progress=lambda *a: done.append(a),
        should_stop=lambda: len(done) >= 3,
    )
    assert first.stopped and 3 <= first.chunks_run < 12
    missing = store.pending_chunks(1)
    second = simulate_round(
        store, 1, simulator=sim, cluster=ClusterConfig(), client=dask_client, run_seed=3
    )
    assert second.chunks_skipped == 12 - len(missing) and second.chunks_run == len(missing)
    np.testing.assert_array_equal(store.read_simulations(1)[1], _reference(store, sim, seed=3))


def test_chunks_in_flight_stay_within_the_limit(tmp_path, dask_client):
    store = _store(tmp_path, n=30, chunk_size=1)
    sim = SimulatorConfig(
        path="test_simulation_helpers:sleepy", kwargs={"seconds_per_simulation": 0.02}
    )
    counts = []

    def count_tasks(*_):
        # chunks waiting or running; a finished chunk's task stays on the scheduler (in
        # memory) until the client's release of its key arrives, which may take a moment
        counts.append(
            dask_client.run_on_scheduler(
                lambda dask_scheduler: sum(
                    str(k).startswith("sbi-rounds-")
                    and ts.state not in ("memory", "released", "forgotten", "erred")
                    for k, ts in dask_scheduler.tasks.items()
                )
            )
        )

    simulate_round(
        store,
        1,
        simulator=sim,
        cluster=ClusterConfig(max_in_flight=3, commit_interval=0),
        client=dask_client,
        run_seed=0,
        progress=count_tasks,
    )
    assert len(counts) >= 10 and max(counts) <= 3


class _CountingStore:
    """The real store, counting its chunk commits."""

    def __init__(self, store: RunStore) -> None:
        self.store, self.writes = store, []

    def write_chunks(self, round_: int, chunks: list) -> None:
        self.writes.append((time.perf_counter(), [c for c, _, _ in chunks]))
        self.store.write_chunks(round_, chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_chunks_that_finish_within_the_commit_interval_are_committed_together(
    tmp_path, dask_client
):
    store = _CountingStore(_store(tmp_path, n=60, chunk_size=1))
    sim = SimulatorConfig(
        path="test_simulation_helpers:sleepy", kwargs={"seconds_per_simulation": 0.02}
    )
    report = simulate_round(
        store,
        1,
        simulator=sim,
        cluster=ClusterConfig(commit_interval=0.4),
        client=dask_client,
        run_seed=0,
    )
    assert report.chunks_run == 60 and store.pending_chunks(1) == []
    committed = [c for _, chunks in store.writes for c in chunks]
    assert sorted(committed) == list(range(60))  # each chunk once
    times = [t for t, _ in store.writes]
    assert len(times) < 60 and len(times) <= report.seconds / 0.4 + 2
    # At least the interval apart, but for the last commit: the one at the end.
    assert all(b - a >= 0.4 for a, b in itertools.pairwise(times[:-1]))
    np.testing.assert_array_equal(store.read_simulations(1)[1], _reference(store.store, sim))


def test_a_stop_commits_the_chunks_that_wait_for_the_interval(tmp_path, dask_client):
    store = _CountingStore(_store(tmp_path, n=200, chunk_size=1))
    sim = SimulatorConfig(
        path="test_simulation_helpers:sleepy", kwargs={"seconds_per_simulation": 0.02}
    )
    t0 = time.perf_counter()
    report = simulate_round(
        store,
        1,
        simulator=sim,
        cluster=ClusterConfig(commit_interval=30),
        client=dask_client,
        run_seed=0,
        should_stop=lambda: time.perf_counter() - t0 > 1.0,
    )
    assert report.stopped and 0 < report.chunks_run < 200
    # The first chunks to finish are committed at once; the interval never passed again, so
    # the rest waited until the stop.
    assert len(store.writes) == 2 and len(store.writes[0][1]) <= 4
    assert len(store.pending_chunks(1)) == 200 - report.chunks_run


@pytest.mark.parametrize("kind", ["per_sample", "command-python", "command-c"])
def test_every_kind_runs_a_round_on_dask(kind, tmp_path, dask_client, request):
    c_sim = request.getfixturevalue("c_simulator") if kind == "command-c" else None
    sim = _kind(kind, c_sim)
    store = _store(tmp_path, n=20, chunk_size=7)
    report = simulate_round(
        store, 1, simulator=sim, cluster=ClusterConfig(), client=dask_client, run_seed=5
    )
    assert report.chunks_run == 3
    np.testing.assert_array_equal(store.read_simulations(1)[1], _reference(store, sim, seed=5))


def test_workers_never_import_prefect(tmp_path, dask_client):
    import prefect  # noqa: F401 - the driver has Prefect loaded, as in a flow run

    store = _store(tmp_path, n=10, chunk_size=2)
    report = simulate_round(
        store,
        1,
        simulator=KINDS["batched-torch"],
        cluster=ClusterConfig(),
        client=dask_client,
        run_seed=0,
    )
    assert report.chunks_run == 5
    loaded = dask_client.run(
        lambda: sorted(
            {m.split(".")[0] for m in sys.modules} & {"prefect", "sbi_rounds", "flows", "tasks"}
        )
    )
    assert len(loaded) == 2
    assert all(mods == ["sbi_rounds"] for mods in loaded.values()), loaded


def test_a_transient_error_is_retried(tmp_path, dask_client):
    store = _store(tmp_path, n=10, chunk_size=5)
    sim = SimulatorConfig(
        path="test_simulation_helpers:fail_once", kwargs={"marker": str(tmp_path / "failed-once")}
    )
    report = simulate_round(
        store, 1, simulator=sim, cluster=ClusterConfig(retries=1), client=dask_client, run_seed=0
    )
    assert report.retries == 1 and report.chunks_run == 2 and store.pending_chunks(1) == []


def test_a_simulator_that_keeps_raising_stops_the_round_with_its_parameters_saved(
    tmp_path, dask_client
):
    store = _store(tmp_path, n=40, chunk_size=4)
    theta = store.read_theta(1)
    theta[:, 0] = -1.0
    theta[9, 0] = 1.5  # chunk 2 fails: rows 8-11
    store.write_theta(1, 0, theta)
    sim = SimulatorConfig(path="test_simulation_helpers:fail_above", kwargs={"threshold": 1.0})
    with pytest.raises(SimulationFailed) as info:
        simulate_round(
            store,
            1,
            simulator=sim,
            cluster=ClusterConfig(retries=2),
            client=dask_client,
            run_seed=0,
        )
    message = str(info.value)
    assert info.value.chunk == 2 and "chunk 2 (rows 8-11) failed 3 times" in message
    assert "parameter 1.500 is above 1.0" in message and "Traceback" in message
    failures = store.failures(1)
    assert list(failures) == [2]
    np.testing.assert_allclose(failures[2][0], theta[8:12], rtol=1e-6)
    assert "ValueError: parameter 1.500" in failures[2][1]
    assert 2 in store.pending_chunks(1)  # not committed; a fixed simulator redoes it


def test_nan_and_inf_outputs_are_kept_marked_and_counted(make_config, dask_client):
    config = make_config(
        rounds=1,
        simulations_per_round=200,
        cluster={"chunk_size": 20},
        simulator={"path": "test_simulation_helpers:nan_above", "kwargs": {"threshold": 1.0}},
    )
    with run_session(config) as run:
        stages.sample_proposal(run, 1)
        stages.simulate(run, 1, dask_client)
        result = stages.append_simulations(run, 1)
        theta, x, valid = run.store.read_simulations(1)
    expected_invalid = (theta[:, 0] > 1.0) | (theta[:, 0] < -1.9)
    np.testing.assert_array_equal(~valid, expected_invalid)
    assert np.isnan(x[theta[:, 0] > 1.0]).all() and np.isinf(x[theta[:, 0] < -1.9, 0]).all()
    assert result.details == Appended(simulations=200, valid=int(valid.sum()))
    assert RunStore.open(config.run_path).counts(1).invalid == int(expected_invalid.sum())
    strict = make_config(
        rounds=1,
        simulations_per_round=200,
        cluster={"chunk_size": 20, "min_valid_fraction": 0.9},
        simulator={"path": "test_simulation_helpers:nan_above", "kwargs": {"threshold": 1.0}},
        run_dir=config.run_dir + "2",
    )
    with run_session(strict) as run:
        stages.sample_proposal(run, 1)
        stages.simulate(run, 1, dask_client)
        with pytest.raises(
            InvalidRoundError,
            match=r"only \d+ of 200 simulations are valid "
            r"\(finite\); at least 180 are needed .*min_valid_fraction=0.9",
        ):
            stages.append_simulations(run, 1)


@pytest.mark.slow
def test_a_hung_chunk_is_cut_retried_and_then_fails_like_an_exception(tmp_path):
    cluster = ClusterConfig(workers=2, chunk_timeout=2.0, retries=1)
    once = SimulatorConfig(
        path="test_simulation_helpers:hang_once", kwargs={"marker": str(tmp_path / "hung")}
    )
    always = SimulatorConfig(path="test_simulation_helpers:hang")
    with open_client(cluster) as client:
        store = _store(tmp_path, n=8, chunk_size=4)
        t0 = time.monotonic()
        report = simulate_round(
            store, 1, simulator=once, cluster=cluster, client=client, run_seed=0
        )
        assert report.retries == 1 and store.pending_chunks(1) == []
        assert time.monotonic() - t0 < 60
        store = _store(tmp_path, n=4, chunk_size=4)
        with pytest.raises(SimulationFailed, match=r"(?s)failed 2 times.*timed out after 2 s"):
            simulate_round(store, 1, simulator=always, cluster=cluster, client=client, run_seed=0)
        assert "chunk_timeout" in store.failures(1)[0][1]
        client.wait_for_workers(2, timeout=60)  # the hung workers were restarted


# --- real `dask scheduler` and `dask worker` processes ------------------------------------
def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli." + args[0], *args[1:]],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def scheduler(tmp_path):
    """A real ``dask scheduler`` on 127.0.0.1; yields its scheduler file. Stopped after."""
    file = tmp_path / "scheduler.json"
    proc = _spawn(
        [
            "dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(file),
        ],
        tmp_path,
    )
    procs = [proc]
    deadline = time.monotonic() + 60
    while not file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "dask scheduler did not start"
        time.sleep(0.1)

    def worker(*extra: str) -> subprocess.Popen:
        procs.append(
            _spawn(
                [
                    "dask_worker",
                    "--scheduler-file",
                    str(file),
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--memory-limit",
                    "0",
                    *extra,
                ],
                tmp_path,
            )
        )
        return procs[-1]

    yield file, worker
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


@pytest.mark.slow
def test_a_killed_worker_s_chunk_is_redone_elsewhere(tmp_path, scheduler):
    file, worker = scheduler
    import json

    address = json.loads(file.read_text())["address"]
    workers = [worker("--no-nanny"), worker("--no-nanny"), worker("--no-nanny")]
    cluster = ClusterConfig(kind="address", address=address, retries=0)
    sim = SimulatorConfig(
        path="test_simulation_helpers:sleepy", kwargs={"seconds_per_simulation": 0.15}
    )
    store = _store(tmp_path, n=36, chunk_size=3)
    killed: list[int] = []

    def kill_a_busy_worker(done, total, rate):
        if killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        pid = _worker_pids(client)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    with open_client(cluster) as client:
        client.wait_for_workers(3, timeout=60)
        client.run(lambda: __import__("sbi_rounds.simulation"))  # warm the workers
        report = simulate_round(
            store,
            1,
            simulator=sim,
            cluster=cluster,
            client=client,
            run_seed=0,
            progress=kill_a_busy_worker,
        )
        assert len(client.nthreads()) == 2
    assert killed and sum(p.poll() is not None for p in workers) == 1
    assert report.chunks_run == 12 and report.retries == 0 and store.pending_chunks(1) == []
    survivors = {w.split(":")[1] for w in report.chunks_by_worker}
    assert len(survivors) >= 2
    np.testing.assert_array_equal(store.read_simulations(1)[1], _reference(store, sim))


@pytest.mark.slow
def test_a_worker_reaching_its_lifetime_behaves_like_a_killed_one(tmp_path, scheduler):
    """What a batch job's walltime does to workers started with ``--lifetime``."""
    file, worker = scheduler
    short = worker("--no-nanny", "--lifetime", "8s")
    worker("--no-nanny")
    cluster = ClusterConfig(kind="scheduler_file", scheduler_file=str(file))
    sim = SimulatorConfig(
        path="test_simulation_helpers:sleepy", kwargs={"seconds_per_simulation": 0.1}
    )
    store = _store(tmp_path, n=240, chunk_size=4)
    exited_during_round = []
    with open_client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        client.run(lambda: __import__("sbi_rounds.simulation"))  # warm the workers
        report = simulate_round(
            store,
            1,
            simulator=sim,
            cluster=cluster,
            client=client,
            run_seed=0,
            progress=lambda *_: exited_during_round.append(short.poll() is not None),
        )
    assert short.wait(timeout=30) == 0  # it retired and exited cleanly
    assert any(exited_during_round) and not all(exited_during_round)
    assert report.chunks_run == 60 and store.pending_chunks(1) == []
    np.testing.assert_array_equal(store.read_simulations(1)[1], _reference(store, sim))


@pytest.mark.slow
def test_the_cli_runs_a_round_with_the_example_external_program(tmp_path):
    command = (
        f"{sys.executable} -m sbi_rounds.examples_command.linear_gaussian "
        "{input} {output} {seed}"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.online",
            "--xobs",
            "0.5",
            "-0.3",
            "--rounds",
            "1",
            "--simulations-per-round",
            "200",
            "--simulator-command",
            command,
            "--chunk-size",
            "25",
            "--max-epochs",
            "3",
            "--num-samples",
            "100",
            "--workers",
            "2",
            "--logger",
            "none",
            "--run-dir",
            str(tmp_path / "runs"),
            "--run-id",
            "cmd",
            "--no-progress",
            "--calibration-simulations",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    store = RunStore.open(tmp_path / "runs" / "cmd" / "run.h5")
    assert store.counts(1) == RoundCounts(simulations=200, valid=200, invalid=0)
    assert store.round_info(1).num_chunks == 8
    assert store.read_config()["simulator"]["kind"] == "command"


def test_a_chunk_running_far_longer_than_its_peers_is_reported_while_it_runs(
    tmp_path, dask_client, caplog
):
    store = _store(tmp_path, n=20, chunk_size=2)
    sim = SimulatorConfig(
        path="test_simulation_helpers:slow_once",
        kwargs={"marker": str(tmp_path / "slow"), "seconds": 14.0},
    )
    with caplog.at_level(logging.WARNING, logger="sbi_rounds.simulation"):
        simulate_round(
            store, 1, simulator=sim, cluster=ClusterConfig(), client=dask_client, run_seed=0
        )
    end = time.time()  # the slow chunk ended last, about 4 s after it was reported
    warnings = [r for r in caplog.records if "it may hang" in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # once, while it ran (not a timeout: none is set)
    assert re.search(
        r"round 1: chunk \d+ has run for 1\d s, more than 5 times the median",
        warnings[0].getMessage(),
    )
    assert end - warnings[0].created > 2  # while it ran
    assert store.pending_chunks(1) == []
