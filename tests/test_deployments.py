"""Deployments: prefect.yaml and serve.py, and runs on a real Prefect server with a worker.

The slow tests start ``prefect server start`` on 127.0.0.1, create the process work pool,
deploy ``deployments/prefect.yaml`` with ``prefect deploy`` and start ``prefect worker
start``, as the README's "Deploy on Prefect" and docs/prefect.md do; then they trigger runs through
the API, cancel one mid-simulation and resume it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import State
from prefect.utilities.callables import parameter_schema
from prefect_servers import free_port, start_prefect_server, stop_server, wait_until_healthy

from flows.online import online_inference
from sbi_rounds.campaign import observation_configs
from sbi_rounds.config import CampaignConfig, RunConfig
from sbi_rounds.lifecycle.locking import RunLock
from sbi_rounds.store import RoundCounts, RunStore, Stage

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "deployments" / "prefect.yaml"
POOL = "sbi-rounds"


def _load_serve() -> Any:
    spec = importlib.util.spec_from_file_location(
        "deployments_serve", ROOT / "deployments/serve.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- prefect.yaml, serve.py and the parameter schema, without a server -----------------------
def test_prefect_yaml_has_an_on_demand_and_a_nightly_deployment_with_valid_defaults(monkeypatch):
    monkeypatch.chdir(ROOT)  # the deployments' relative paths are from the checkout
    data = yaml.safe_load(SPEC.read_text())
    deployments = {d["name"]: d for d in data["deployments"]}
    assert set(deployments) == {"on-demand", "nightly", "campaign"}
    campaign = deployments.pop("campaign")
    assert campaign["entrypoint"] == "flows/campaign.py:campaign_inference"
    configs = observation_configs(
        CampaignConfig.model_validate(campaign["parameters"]["campaign"]),
        campaign["parameters"]["settings"],
    )
    assert [c.xobs for c in configs][0] == [0.5, -0.3] and len(configs) == 3
    assert data["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ checkout.stdout }}"}}
    ]
    for d in deployments.values():
        assert d["entrypoint"] == "flows/online.py:online_inference"
        assert d["work_pool"]["name"] == POOL
        config = RunConfig.model_validate(d["parameters"]["config"])
        assert config.cluster.dashboard
    assert "schedules" not in deployments["on-demand"]
    assert deployments["nightly"]["schedules"] == [
        {"cron": "0 2 * * *", "timezone": "UTC", "active": True}
    ]
    on_demand = RunConfig.model_validate(deployments["on-demand"]["parameters"]["config"])
    assert on_demand.xobs == [0.5, -0.3] and on_demand.rounds == 3
    assert on_demand.simulations_per_round == 500


def test_serve_builds_the_yaml_deployments_under_their_own_names():
    serve = _load_serve()
    deployments = serve.to_deployments(serve.deployment_specs())
    by_name = {d.name: d for d in deployments}
    assert set(by_name) == {"on-demand-served", "nightly-served", "campaign-served"}
    assert by_name["campaign-served"].entrypoint == "flows/campaign.py:campaign_inference"
    assert by_name["on-demand-served"].parameters["config"]["xobs"] == [0.5, -0.3]
    (schedule,) = by_name["nightly-served"].schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.active
    assert by_name["on-demand-served"].entrypoint == "flows/online.py:online_inference"


def test_serve_refuses_to_start_a_second_server_on_a_busy_port():
    from flows.server import ServerStartError, ui_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerStartError, match="exited|did not answer"):
            with ui_server("127.0.0.1", port, timeout=60):
                pass


def _check_schema(schema: dict[str, Any]) -> None:
    """Titles, descriptions, bounds and choices that the UI's form is built from."""
    defs = schema["definitions"]
    assert schema["required"] == ["config"]
    assert "observation, method, rounds" in schema["properties"]["config"]["description"]
    assert schema["properties"]["allow_changes"]["anyOf"][0]["items"]["enum"][:2] == [
        "xobs",
        "simulator",
    ]
    run = defs["RunConfig"]
    defs_name = {"tfmpe": "FlowMatchingConfig", "tnpse": "ScoreMatchingConfig"}
    assert run["title"] == "Online inference run"
    props = run["properties"]
    for name, prop in props.items():
        assert prop.get("title"), f"RunConfig.{name} has no title"
        assert prop.get("description"), f"RunConfig.{name} has no description"
    assert props["method"]["enum"] == ["snpe", "tsnpe", "snle", "snre", "tfmpe", "tnpse"]
    for method in ("tfmpe", "tnpse"):  # the methods' own settings are in the form too
        assert props[method]["$ref"] == f"#/definitions/{defs_name[method]}"
        settings = defs[defs_name[method]]["properties"]
        assert {"sample_with", "sde_steps", "ode_atol", "threshold_density"} <= set(settings)
    assert (props["rounds"]["minimum"], props["rounds"]["maximum"]) == (1, 1000)
    sims = {b["type"]: b for b in props["simulations_per_round"]["anyOf"]}
    assert sims["integer"]["minimum"] == 2 and sims["array"]["items"]["minimum"] == 2
    xobs = {b["type"]: b for b in props["xobs"]["anyOf"]}
    assert xobs["array"]["items"] == {"type": "number"} and xobs["array"]["minItems"] == 1
    assert xobs["string"]["title"] == "File path"
    assert props["cluster"]["$ref"] == "#/definitions/ClusterConfig"
    assert props["cluster"]["title"] == "Dask cluster"
    cluster = defs["ClusterConfig"]["properties"]
    assert list(cluster)[:4] == ["kind", "workers", "threads_per_worker", "dashboard"]
    assert (cluster["workers"]["minimum"], cluster["workers"]["maximum"]) == (1, 4096)
    assert "slurm" in cluster["kind"]["enum"] and cluster["kind"]["description"]
    assert cluster["jobqueue"]["$ref"] == "#/definitions/JobqueueConfig"
    assert all(p.get("title") for p in defs["JobqueueConfig"]["properties"].values())


def test_the_flow_parameter_schema_holds_titles_descriptions_bounds_and_choices():
    _check_schema(parameter_schema(online_inference).model_dump())


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        ("tfmpe", {"num_layers": 4, "time_sampling": "logit_normal", "threshold_density": "kde"}),
        ("tnpse", {"sde_type": "vp", "sample_with": "ode"}),
    ],
)
def test_the_vector_field_methods_and_their_settings_pass_the_deployment_form(method, settings):
    """What the Prefect form sends for tfmpe / tnpse validates against the flow's parameter
    schema and builds the run's settings; a misspelled one does not."""
    import jsonschema

    schema = parameter_schema(online_inference).model_dump()
    schema = {**schema, "definitions": schema.get("definitions", {})}
    config = {"xobs": [0.5, -0.3], "method": method, method: settings}
    jsonschema.validate({"config": config}, schema)
    assert (
        getattr(RunConfig.model_validate(config), method).model_dump(include=set(settings))
        == settings
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"config": {**config, method: {"num_layer": 4}}}, schema)


def test_a_path_for_xobs_validates_against_the_schema_and_loads(tmp_path):
    np.save(tmp_path / "xobs.npy", np.array([0.5, -0.3]))
    config = RunConfig.model_validate({"xobs": str(tmp_path / "xobs.npy")})
    assert config.xobs == [0.5, -0.3]


# --- a real server, work pool, deployment and worker --------------------------------------
def _stop_tree(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Terminate a process and everything it started (flow runs start in new sessions)."""
    if process.poll() is not None:
        return
    children = psutil.Process(process.pid).children(recursive=True)
    stop_server(process, timeout=timeout)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _prefect(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class Stack:
    """The running server and worker, and a client of the server's API."""

    def __init__(self, api_url: str, env: dict[str, str], worker: subprocess.Popen[Any], log: Path):
        self.api_url, self.env, self.worker, self.worker_log = api_url, env, worker, log

    @contextlib.contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            with get_client(sync_client=True) as client:
                yield client

    def run(self, client: SyncPrefectClient, config: dict[str, Any]) -> FlowRun:
        deployment = client.read_deployment_by_name("online_inference/on-demand")
        return client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})

    def wait(self, client: SyncPrefectClient, run: FlowRun, timeout: float = 180) -> FlowRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                return run
            assert self.worker.poll() is None, f"the worker died:\n{self.worker_log.read_text()}"
            time.sleep(0.5)
        raise AssertionError(
            f"flow run still {run.state} after {timeout} s; worker log:\n"
            + self.worker_log.read_text()[-5000:]
        )

    def logs(self, client: SyncPrefectClient, run: FlowRun, *wanted: str) -> list[str]:
        """The run's log messages, once one holds each of ``wanted`` (logs arrive late)."""
        deadline = time.monotonic() + 30
        while True:
            messages, offset = [], 0
            while True:
                page = client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                    limit=200,
                    offset=offset,
                )
                messages += [log.message for log in page]
                offset += 200
                if len(page) < 200:
                    break
            if all(any(w in m for m in messages) for w in wanted):
                return messages
            assert time.monotonic() < deadline, f"no log line with {wanted}:\n{messages}"
            time.sleep(0.5)

    def artifacts(self, client: SyncPrefectClient, run: FlowRun) -> list[Any]:
        return client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """``prefect server start``, a process pool, ``prefect deploy --all``, a worker."""
    tmp = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp / "home"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        # no scheduled runs of the nightly deployment during the test
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    server_log = tmp / "server.log"
    with server_log.open("w") as out:
        server = start_prefect_server(port, env, output=out)
    worker = None
    try:
        try:
            wait_until_healthy(api_url, server, timeout=120)
        except RuntimeError as error:
            raise AssertionError(f"{error}:\n{server_log.read_text()}") from None
        _prefect(env, "work-pool", "create", POOL, "--type", "process")
        _prefect(env, "--no-prompt", "deploy", "--prefect-file", str(SPEC), "--all")
        worker_log = tmp / "worker.log"
        with worker_log.open("w") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        yield Stack(api_url, env, worker, worker_log)
    finally:
        if worker is not None:
            _stop_tree(worker)
        _stop_tree(server)


def _config(tmp_path: Path, run_id: str, **overrides: Any) -> dict[str, Any]:
    config = {
        "xobs": [0.5, -0.3],
        "rounds": 2,
        "simulations_per_round": 200,
        "run_dir": str(tmp_path / "runs"),
        "run_id": run_id,
        "training": {"max_epochs": 5, "checkpoint_every": 2, "checkpoint_min_seconds": 0},
        "network": {"hidden_features": 20, "num_transforms": 2},
        "posterior": {"num_samples": 200},
        "logger": {"backend": "none"},
        "cluster": {"workers": 1, "chunk_size": 50, "dashboard": True},
        "diagnostics": {"calibration_simulations": 0},
    }
    config.update(overrides)
    return config


@pytest.mark.slow
def test_the_deployments_hold_the_parameter_schema_defaults_and_schedule(stack):
    with stack.client() as client:
        on_demand = client.read_deployment_by_name("online_inference/on-demand")
        nightly = client.read_deployment_by_name("online_inference/nightly")
    _check_schema(on_demand.parameter_openapi_schema)
    assert on_demand.enforce_parameter_schema and on_demand.work_pool_name == POOL
    assert on_demand.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    assert on_demand.parameters["config"]["xobs"] == [0.5, -0.3]
    assert not on_demand.schedules
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.active


@pytest.mark.slow
def test_a_deployed_run_fills_the_run_file_and_publishes_artifacts(stack, tmp_path):
    config = _config(tmp_path, "deployed")
    with stack.client() as client:
        run = stack.wait(client, stack.run(client, config))
        assert run.state.type == StateType.COMPLETED, stack.worker_log.read_text()[-5000:]
        artifacts = stack.artifacts(client, run)
        logs = stack.logs(client, run, "round 2/2 done: 200 simulations (200 valid)")
    store = RunStore.open(tmp_path / "runs" / "deployed" / "run.h5")
    assert [store.stage(r) for r in (1, 2)] == [Stage.DONE, Stage.DONE]
    assert store.counts(2) == RoundCounts(simulations=200, valid=200, invalid=0)
    assert store.read_samples(2).shape == (200, 2)

    by_key: dict[str, list[Any]] = {}
    for artifact in sorted(artifacts, key=lambda a: a.created):
        by_key.setdefault(artifact.key, []).append(artifact)
    # One progress artifact per simulated round, at 100% when the round is simulated.
    progress = by_key["deployed-simulation-progress"]
    assert len(progress) == 2 and all(float(a.data) == 100.0 for a in progress)
    assert progress[1].description.startswith("Round 2 of 2: 200 of 200 simulations")
    # A table per round, the last one with both rounds.
    tables = by_key["deployed-rounds"]
    assert len(tables) == 2 and tables[-1].type == "table"
    rows = json.loads(tables[-1].data)
    assert [r["round"] for r in rows] == [1, 2] and rows[1]["valid"] == 200
    assert rows[1]["epochs"] == 5 and rows[1]["train (s)"] > 0
    # A posterior summary with the embedded pairplot per round.
    posteriors = by_key["deployed-posterior"]
    assert [p.description[-8:] for p in posteriors] == ["round 1.", "round 2."]
    assert "| theta_1 |" in posteriors[-1].data
    assert re.search(
        r"!\[[^]]*\]\(data:image/png;base64,[A-Za-z0-9+/=]{1000,}\)", posteriors[-1].data
    )
    # The HTML report, linked; each round's stop reason in its posterior artifact.
    report = tmp_path / "runs" / "deployed" / "report" / "report.html"
    assert report.resolve().as_uri() in by_key["deployed-report"][-1].data
    assert "epochs (stopped by max_epochs)" in posteriors[-1].data
    # The Dask dashboard: its link in the logs and as a link artifact.
    if importlib.util.find_spec("bokeh") is not None:
        assert any(m.startswith("Dask dashboard: http://127.0.0.1:") for m in logs)
        assert "Dask dashboard" in by_key["deployed-dask-dashboard"][0].data
    else:
        assert any("needs bokeh" in m for m in logs)


@pytest.mark.slow
def test_a_cancelled_run_stops_cleanly_and_a_rerun_resumes_without_redoing_chunks(stack, tmp_path):
    # 10 chunks of 20 simulations taking 1.6 s each on one worker.
    config = _config(
        tmp_path,
        "resumable",
        rounds=1,
        simulator={
            "path": "sbi_rounds.examples:slow_linear_gaussian",
            "kwargs": {"seconds_per_simulation": 0.08},
        },
        cluster={"workers": 1, "chunk_size": 20, "dashboard": True},
    )
    path = tmp_path / "runs" / "resumable" / "run.h5"
    with stack.client() as client:
        run = stack.run(client, config)
        deadline = time.monotonic() + 120
        while True:  # until 2 chunks are committed
            with contextlib.suppress(OSError, KeyError):
                if len(RunStore(path).pending_chunks(1)) <= 8:
                    break
            assert time.monotonic() < deadline, stack.worker_log.read_text()[-5000:]
            time.sleep(0.2)
        processes = psutil.Process(stack.worker.pid).children(recursive=True)
        assert any("dask" in _cmdline(p) for p in processes)
        if importlib.util.find_spec("bokeh") is not None:  # the dashboard answers meanwhile
            (link,) = [a for a in stack.artifacts(client, run) if a.key.endswith("dashboard")]
            url = re.search(r"\((http://[^)]+)\)", link.data).group(1)
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
        # What the UI's "Cancel" and `prefect flow-run cancel` do.
        client.set_flow_run_state(run.id, State(type=StateType.CANCELLING))
        cancelled = time.monotonic()
        run = stack.wait(client, run, timeout=90)
        assert run.state.type == StateType.CANCELLED, stack.worker_log.read_text()[-5000:]
        logs = stack.logs(client, run, "run resumable stopped by SIGTERM")
    # Stopped within seconds: the simulation was interrupted in round 1, not finished.
    store = RunStore.open(path)
    pending = store.pending_chunks(1)
    assert 0 < len(pending) <= 8 and store.stage(1) == Stage.SAMPLED
    # The flow run's process and its Dask scheduler and workers are gone.
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.wait(timeout=max(1, 40 - (time.monotonic() - cancelled)))
    # The file is consistent and free: no temporary copies, the lock can be taken.
    assert not list(path.parent.glob("run.h5.tmp-*"))
    with RunLock(path.parent / "run.lock"):
        pass
    done_before = sorted(set(range(10)) - set(pending))
    seconds_before = store.chunk_seconds(1)

    # The same parameters again: the run resumes and finishes round 1.
    with stack.client() as client:
        run = stack.wait(client, stack.run(client, config))
        assert run.state.type == StateType.COMPLETED, stack.worker_log.read_text()[-5000:]
        logs = stack.logs(client, run, "round 1 simulated:")
    assert store.stage(1) == Stage.DONE and store.pending_chunks(1) == []
    # No finished chunk was simulated again: their timings are the ones of the first run.
    np.testing.assert_array_equal(store.chunk_seconds(1)[done_before], seconds_before[done_before])
    assert any(
        f"round 1 simulated: {len(pending)} chunk(s) run ({20 * len(pending)} simulations), "
        f"{len(done_before)} chunk(s) committed before and skipped" in m
        for m in logs
    ), logs


# --- a run without a runner (the command line) cancelled from the API -----------------------
def _pending_chunks_read_by_another_process(path: Path) -> int | None:
    """How many chunks of round 1 are pending, or None while the file cannot be read yet.

    Read in a child process: HDF5 refuses to open a file in this process while another
    handle in it holds the file in a different mode, so a read here, racing the run's own
    ``r+`` open of the file it simulates into, fails the run (not the poll).
    """
    code = "import sys; from sbi_rounds.store import RunStore; " + (
        "print(len(RunStore(sys.argv[1]).pending_chunks(1)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    return int(done.stdout) if done.returncode == 0 else None


@pytest.mark.slow
def test_cancelling_a_command_line_run_stops_it_and_the_same_command_resumes(
    prefect_server, tmp_path, capsys
):
    from flows.cli.run import main

    config = _config(
        tmp_path,
        "cli-run",
        rounds=1,
        simulator={
            "path": "sbi_rounds.examples:slow_linear_gaussian",
            "kwargs": {"seconds_per_simulation": 0.08},
        },
        cluster={"workers": 1, "chunk_size": 20},
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    path = tmp_path / "runs" / "cli-run" / "run.h5"

    def cancel_when_two_chunks_are_done() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pending = _pending_chunks_read_by_another_process(path)
            if pending is not None and pending <= 8:
                break
            time.sleep(0.2)
        with get_client(sync_client=True) as client:
            # by name: the session's shared server holds other tests' runs, killed ones
            # among them still RUNNING
            (run,) = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name={"any_": ["cli-run"]}, state={"type": {"any_": ["RUNNING"]}}
                ),
                sort="START_TIME_DESC",
                limit=1,
            )
            client.set_flow_run_state(run.id, State(type=StateType.CANCELLING))

    context = contextvars.copy_context()  # the thread talks to the test harness's server
    canceller = threading.Thread(target=context.run, args=(cancel_when_two_chunks_are_done,))
    canceller.start()
    assert main(["--config", str(tmp_path / "run.yaml"), "--no-progress"]) == 130
    canceller.join()
    err = capsys.readouterr().err
    assert "Cancelled from Prefect" in err and "--run-id cli-run" in err
    store = RunStore.open(path)
    pending = store.pending_chunks(1)
    assert 0 < len(pending) <= 8 and store.stage(1) == Stage.SAMPLED
    done_before = sorted(set(range(10)) - set(pending))
    seconds_before = store.chunk_seconds(1)
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name={"any_": ["cli-run"]}),
            sort="START_TIME_DESC",
            limit=1,
        )
        assert run.state.type == StateType.CANCELLED

    assert main(["--config", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    assert store.stage(1) == Stage.DONE
    np.testing.assert_array_equal(store.chunk_seconds(1)[done_before], seconds_before[done_before])


@pytest.mark.slow
def test_the_campaign_deployment_runs_every_observation_and_writes_the_summary(stack, tmp_path):
    np.savetxt(tmp_path / "obs.csv", np.array([[0.5, -0.3], [0.1, 0.2]]), delimiter=",")
    settings = _config(tmp_path, "unused", simulations_per_round=100)
    for key in ("xobs", "run_dir", "run_id"):
        del settings[key]
    campaign = {"observations": str(tmp_path / "obs.csv"), "directory": str(tmp_path / "c")}
    with stack.client() as client:
        deployment = client.read_deployment_by_name("campaign/campaign")
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"campaign": campaign, "settings": settings}
        )
        run = stack.wait(client, run, timeout=300)
        assert run.state.type == StateType.COMPLETED, stack.worker_log.read_text()[-5000:]
    for i in range(2):
        store = RunStore.open(tmp_path / "c" / f"obs-000{i}" / "run.h5")
        assert [store.stage(r) for r in (1, 2)] == [Stage.DONE, Stage.DONE]
    assert "2 observations, 2 finished" in (tmp_path / "c" / "summary.html").read_text()
