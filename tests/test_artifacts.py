"""The flow's Prefect artifacts: their content, and publishing them to a real server."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.artifacts import (
    SimulationProgress,
    artifact_key,
    png_data_uri,
    posterior_markdown,
    publish_posterior,
    publish_round_table,
    round_table_artifact_rows,
)
from sbi_rounds.diagnostics import save_pairplot
from sbi_rounds.report.table import ROUND_COLUMNS, RoundRow
from sbi_rounds.store.schema import ParameterSummary

ROW = RoundRow(
    round=1,
    stage="done",
    simulations=200,
    valid=198,
    epochs=5,
    best_val_loss=2.345678,
    sample_s=0.0123456,
    simulate_s=1.5,
    append_s=0.01,
    train_s=3.0,
    posterior_s=math.nan,
    checkpoint_s=0.2,
    commit_s=0.05,
)
SUMMARY = {
    "theta_1": ParameterSummary(mean=0.5, std=0.1, q05=0.33, median=0.5, q95=0.66),
    "theta_2": ParameterSummary(mean=-0.3, std=0.1, q05=-0.46, median=-0.3, q95=-0.13),
}


@pytest.fixture
def pairplot(tmp_path):
    samples = np.random.default_rng(0).normal([0.5, -0.3], 0.1, size=(300, 2))
    return save_pairplot(samples, ["theta_1", "theta_2"], tmp_path / "pairplot.png")


@pytest.mark.parametrize(
    ("run_id", "what", "key"),
    [
        ("snpe-1a2b3c4d5e", "rounds", "snpe-1a2b3c4d5e-rounds"),
        ("My_Run.v2", "posterior", "my-run-v2-posterior"),
        ("A", "simulation-progress", "a-simulation-progress"),
    ],
)
def test_artifact_keys_are_lowercase_letters_digits_and_dashes(run_id, what, key):
    assert artifact_key(run_id, what) == key


def test_round_table_rows_have_readable_columns_and_no_nan():
    missing = ROW.model_copy(update={"round": 2, "stage": "simulated", "valid": -1, "epochs": None})
    rows = round_table_artifact_rows([ROW, missing])
    # the console's and report's columns; "in prior" only where a round measured it
    assert list(rows[0]) == [c.title for c in ROUND_COLUMNS if c.key != "in_prior"]
    leaky = round_table_artifact_rows([ROW.model_copy(update={"in_prior": 3.04}), missing])
    assert list(leaky[0]) == [c.title for c in ROUND_COLUMNS]
    assert leaky[0]["in prior (%)"] == 3.04 and leaky[1]["in prior (%)"] is None
    assert {"round", "stage", "network", "stopped by", "best validation loss"} <= set(rows[0])
    assert rows[0]["best validation loss"] == 2.3457 and rows[0]["sample (s)"] == 0.0123
    assert rows[0]["posterior (s)"] is None
    assert rows[1]["valid"] is None and rows[1]["epochs"] is None and rows[1]["round"] == 2


def test_the_posterior_markdown_embeds_the_pairplot_as_a_data_uri(pairplot, tmp_path):
    text = posterior_markdown(
        run_id="r1",
        round_=1,
        rounds=3,
        summary=SUMMARY,
        xobs=[0.5, -0.3],
        row=ROW,
        pairplot=pairplot,
        run_file=tmp_path / "run.h5",
    )
    assert text.startswith("# Posterior after round 1 of 3")
    assert "| theta_1 | 0.5 | 0.1 | 0.33 | 0.5 | 0.66 |" in text
    assert "198 valid of 200 simulations, 5 epochs, best validation loss 2.346" in text
    uri = text.split("](", 1)[1].split(")", 1)[0]
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == pairplot.read_bytes()
    assert f"`{tmp_path / 'run.h5'}`" in text


def test_a_pairplot_too_large_to_embed_is_named_instead(pairplot):
    assert png_data_uri(pairplot, max_bytes=10) is None
    text = posterior_markdown(
        run_id="r1",
        round_=1,
        rounds=1,
        summary=SUMMARY,
        xobs=[0.5, -0.3],
        row=ROW,
        pairplot=pairplot,
        run_file="run.h5",
        max_image_bytes=10,
    )
    assert "data:image" not in text and f"it is at `{pairplot}`" in text


@flow
def _publishing_flow(pairplot: str) -> str:
    logger = get_run_logger()
    progress = SimulationProgress(logger, "art-run", 1, 2, done=50, total=200, min_interval=0)
    progress(100, 200, 40.0)
    progress(200, 200, 41.0)
    publish_round_table(logger, "art-run", [ROW])
    publish_posterior(
        logger,
        "art-run",
        1,
        rounds=2,
        summary=SUMMARY,
        xobs=[0.5, -0.3],
        row=ROW,
        pairplot=pairplot,
        run_file="run.h5",
    )
    from prefect.context import FlowRunContext

    return str(FlowRunContext.get().flow_run.id)


def test_artifacts_are_published_to_a_real_server(prefect_server, pairplot):
    flow_run_id = _publishing_flow(str(pairplot))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == {"art-run-simulation-progress", "art-run-rounds", "art-run-posterior"}
    progress = by_key["art-run-simulation-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert progress.description == "Round 1 of 2: 200 of 200 simulations, 41 simulations/s"
    table = by_key["art-run-rounds"]
    assert table.type == "table"
    assert '"best validation loss": 2.3457' in table.data and "NaN" not in table.data
    markdown = by_key["art-run-posterior"]
    assert markdown.type == "markdown" and "data:image/png;base64," in markdown.data


@flow
def _failing_publish_flow() -> None:
    # An invalid key makes the API call fail: the run goes on, with a warning.
    logger = get_run_logger()
    from flows import artifacts

    artifacts._safely(logger, "test", lambda: artifacts.create_table_artifact([], key="Bad Key"))


def test_a_failure_to_publish_is_a_warning_not_a_failed_run(prefect_server, caplog):
    _failing_publish_flow()
    assert "could not publish the test artifact" in caplog.text
