"""Tests of the tracker adapters: write with the real libraries, then read back what they wrote."""

from __future__ import annotations

import io
import json
import logging
import struct
import sys
import time
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from sbi_rounds.training.config import TrackerConfig
from sbi_rounds.training.trackers import (
    LogTracker,
    MissingExtraError,
    MLflowTracker,
    NullTracker,
    StdoutTracker,
    TensorBoardTracker,
    Tracker,
    WandbTracker,
    flatten_params,
    make_tracker,
)

PARAMS = {
    "method": "snpe",
    "train": {"batch_size": 50, "learning_rate": 5e-4, "scheduler": None},
    "prior_bounds": [0, 1],
}
FLAT = {
    "method": "snpe",
    "train.batch_size": 50,
    "train.learning_rate": 5e-4,
    "train.scheduler": None,
    "prior_bounds": "[0, 1]",
}
EPOCHS = {
    1: {"train_loss": 3.0, "val_loss": 3.5},
    2: {"train_loss": 1.5, "val_loss": 1.75},
    3: {"train_loss": 1.0, "val_loss": 1.25},
}


@pytest.fixture(scope="module", autouse=True)
def _offline_wandb(tmp_path_factory):
    """Offline, silent W&B without system metrics, git or code capture.

    Its caches and debug logs (``~/.cache/wandb/logs`` by default) go to a temporary
    folder, and wandb-core, the service process the first ``wandb.init`` starts, is
    stopped after this module.
    """
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_DISABLE_GIT": "true",
            "WANDB_DISABLE_CODE": "true",
            "WANDB__DISABLE_STATS": "true",
            "WANDB__DISABLE_META": "true",
            "WANDB__SAVE_REQUIREMENTS": "false",
            "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_CONFIG_DIR": str(home / "config"),
            "WANDB_DATA_DIR": str(home / "data"),
        }.items():
            patch.setenv(name, value)
        yield
        if sys.modules.get("wandb") is not None:
            sys.modules["wandb"].teardown()


def _figure() -> Figure:
    figure = Figure(figsize=(2, 2), dpi=50)
    figure.subplots().plot([0, 1, 2], [1, 0, 1])
    return figure


def _write(tracker: Tracker, figure: Figure | None = None) -> None:
    """The scenario every backend gets: params, three epochs, one round metric, a figure."""
    tracker.log_params(PARAMS)
    for step, metrics in EPOCHS.items():
        tracker.log_metrics(metrics, step=step)
    tracker.log_metric("round/best_val_loss", 1.25, step=1)
    if figure is not None:
        tracker.add_figure("round/posterior", figure, step=1)
    tracker.close()


# ----------------------------------------------------------------------- flatten_params


def test_flatten_params_dotted_names_and_scalar_values():
    nested = {"a": {"b": {"c": 1}, "d": torch.tensor(2.5)}, "e": (1, 2), 3: {}, "p": Path("x")}
    assert flatten_params(nested) == {"a.b.c": 1, "a.d": 2.5, "e": "(1, 2)", "3": "{}", "p": "x"}
    assert flatten_params({"a": {"b": 1}}, sep="/") == {"a/b": 1}
    assert flatten_params(PARAMS) == FLAT


def test_flatten_params_rejects_collisions_and_non_mappings():
    with pytest.raises(ValueError, match="'a.b'"):
        flatten_params({"a.b": 1, "a": {"b": 2}})
    with pytest.raises(TypeError, match="mapping"):
        flatten_params([("a", 1)])


# ------------------------------------------------------------------------------ stdout


def test_stdout_one_terse_line_per_call(capsys):
    tracker = StdoutTracker(prefix="run-1")
    _write(tracker, _figure())
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[run-1] params method=snpe train.batch_size=50 train.learning_rate=0.0005 "
        "train.scheduler=None prior_bounds=[0, 1]",
        "[run-1] step=1 train_loss=3 val_loss=3.5",
        "[run-1] step=2 train_loss=1.5 val_loss=1.75",
        "[run-1] step=3 train_loss=1 val_loss=1.25",
        "[run-1] step=1 round/best_val_loss=1.25",
        "[run-1] figure round/posterior step=1 not saved (StdoutTracker has no figure_dir)",
    ]


def test_stdout_saves_figures_and_writes_to_a_given_stream(tmp_path):
    stream = io.StringIO()
    tracker = StdoutTracker(stream, figure_dir=tmp_path / "figures", precision=2)
    tracker.log_metrics({"loss": 1.23456, "nan": float("nan")})
    tracker.add_figure("round/posterior", _figure(), step=2)
    png = tmp_path / "figures" / "round" / "posterior_step2.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert stream.getvalue().splitlines() == [
        "loss=1.2 nan=nan",
        f"figure round/posterior step=2 -> {png}",
    ]


# ------------------------------------------------------------------------- TensorBoard


def test_tensorboard_event_files_hold_scalars_params_and_figure(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = TensorBoardTracker(tmp_path / "tb")
    assert tracker.log_dir == str(tmp_path / "tb")
    _write(tracker, _figure())

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    for name in ("train_loss", "val_loss"):
        assert [(e.step, e.value) for e in events.Scalars(name)] == [
            (step, metrics[name]) for step, metrics in EPOCHS.items()
        ]
    assert [(e.step, e.value) for e in events.Scalars("round/best_val_loss")] == [(1, 1.25)]
    (text,) = events.Tensors("params/text_summary")
    table = text.tensor_proto.string_val[0].decode()
    assert "| train.batch_size | 50 |" in table and "| prior_bounds | [0, 1] |" in table
    (image,) = events.Images("round/posterior")
    assert image.step == 1 and image.encoded_image_string.startswith(b"\x89PNG")


# ------------------------------------------------------------------------------ MLflow


def _mlflow_run(tracker: MLflowTracker):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracker.log_dir)
    return client, client.get_run(tracker.run_id)


def test_mlflow_file_store_holds_metric_history_params_and_figure(tmp_path):
    uri = (tmp_path / "mlruns").as_uri()
    figure = _figure()
    tracker = MLflowTracker(uri, experiment="exp", run_name="run-1")
    _write(tracker, figure)

    client, run = _mlflow_run(tracker)
    assert run.info.run_name == "run-1" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "exp"
    assert run.data.params == {name: str(value) for name, value in FLAT.items()}
    for name in ("train_loss", "val_loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted((m.step, m.value) for m in history) == [
            (step, metrics[name]) for step, metrics in EPOCHS.items()
        ]
    (best,) = client.get_metric_history(run.info.run_id, "round/best_val_loss")
    assert (best.step, best.value) == (1, 1.25)
    png = Path(client.download_artifacts(run.info.run_id, "figures/round/posterior_step1.png"))
    assert png.read_bytes().startswith(b"\x89PNG")
    assert figure.axes, "the figure must stay usable"


def test_mlflow_limits_and_immutable_params(tmp_path):
    with MLflowTracker(tmp_path / "mlruns", run_name="limits") as tracker:  # a plain path
        tracker.log_params({"long": "x" * 7000, "seed": 1})
        tracker.log_params({"seed": 1})  # the same value again is fine
        with pytest.raises(ValueError, match="'seed' was logged as '1'.*prefix="):
            tracker.log_params({"seed": 2})
        with pytest.raises(ValueError, match="MLflow cannot store the metric name 'a//b'"):
            tracker.log_metric("a//b", 1.0)
        with pytest.raises(ValueError, match="at most 250"):
            tracker.log_metric("x" * 251, 1.0)
    _, run = _mlflow_run(tracker)
    assert run.data.params["long"] == "x" * 5997 + "..."
    assert run.data.params["seed"] == "1"
    assert tracker.log_dir == (tmp_path / "mlruns").as_uri()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, inside MLflow
def test_mlflow_sqlite_store_keeps_artifacts_next_to_the_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's own artifact default would be ./mlruns
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    (tmp_path / "db").mkdir()
    with MLflowTracker(uri, experiment="exp", run_name="run-1") as tracker:
        tracker.log_metrics({"round/best_val_loss": 1.25}, step=1)
        tracker.add_figure("round/posterior", _figure(), step=1)
    client, run = _mlflow_run(tracker)
    (best,) = client.get_metric_history(run.info.run_id, "round/best_val_loss")
    assert (best.step, best.value) == (1, 1.25)
    artifacts = tmp_path / "db" / "mlartifacts"
    assert client.get_experiment(run.info.experiment_id).artifact_location == artifacts.as_uri()
    (png,) = artifacts.rglob("posterior_step1.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "mlruns").exists()


def test_mlflow_run_fails_when_the_with_block_raises(tmp_path):
    with pytest.raises(KeyError), MLflowTracker(tmp_path / "mlruns") as tracker:
        raise KeyError("boom")
    _, run = _mlflow_run(tracker)
    assert run.info.status == "FAILED"


# -------------------------------------------------------------------------------- W&B

_WANDB_BLOCK = 32 * 1024


def _wandb_records(path: Path) -> list:
    """Decode a ``.wandb`` transaction log: a LevelDB-style log of ``Record`` protobufs.

    The layout: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then chunks with a
    7-byte header (CRC32-C, little-endian length, type 1 full / 2 first / 3 middle /
    4 last) in 32 KiB blocks; a block's tail shorter than a header is zero padding.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if _WANDB_BLOCK - pos % _WANDB_BLOCK < 7:
            pos += _WANDB_BLOCK - pos % _WANDB_BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def _wandb_read(run_dir: Path) -> tuple[list[dict], dict, list[str], dict[str, str]]:
    """History rows, config, saved files and step metrics of an offline run."""
    (log,) = run_dir.glob("run-*.wandb")
    rows, config, files, steps = [], {}, [], {}
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
        elif kind == "files":
            files += [f.path for f in record.files.files]
        elif kind == "metric" and record.metric.step_metric:
            steps[record.metric.name] = record.metric.step_metric
    return rows, config, files, steps


def test_wandb_offline_run_holds_history_config_and_figure(tmp_path):
    tracker = WandbTracker(tmp_path, project="sbi-rounds-test", run_name="run-1")
    run_dir = Path(tracker.log_dir)
    assert run_dir.parent == tmp_path / "wandb" and run_dir.name.startswith("offline-run-")
    _write(tracker, _figure())

    # wandb's service process may still be appending the run's records when finish()
    # returns (seen once under load: no config record yet): read until it is there, 10 s
    for _ in range(20):
        rows, config, files, steps = _wandb_read(run_dir)
        if any(not k.startswith("_") for k in config):
            break
        time.sleep(0.5)
    assert {k: v for k, v in config.items() if not k.startswith("_")} == FLAT
    for name in ("train_loss", "val_loss"):
        got = [(row["step"], row[name]) for row in rows if name in row]
        assert got == [(step, metrics[name]) for step, metrics in EPOCHS.items()]
    best = "round/best_val_loss"
    assert [(row["round/step"], row[best]) for row in rows if best in row] == [(1, 1.25)]
    image = next(row for row in rows if "round/posterior/path" in row)
    assert image["round/step"] == 1 and image["round/posterior/_type"] == "image-file"
    assert image["round/posterior/path"] in files
    assert (run_dir / "files" / image["round/posterior/path"]).read_bytes()[:4] == b"\x89PNG"
    assert steps == {
        "train_loss": "step",
        "val_loss": "step",
        "round/best_val_loss": "round/step",
        "round/posterior": "round/step",
    }


def test_wandb_runs_open_side_by_side_and_reserve_the_step_names(tmp_path):
    with WandbTracker(tmp_path / "a") as first, WandbTracker(tmp_path / "b") as second:
        assert first.run.id != second.run.id
        with pytest.raises(ValueError, match="x-axis"):
            first.log_metrics({"round/step": 1.0})


# ----------------------------------------------------------------------- make_tracker


@pytest.mark.parametrize(
    ("backend", "kind"),
    [
        ("log", LogTracker),
        ("stdout", StdoutTracker),
        ("none", NullTracker),
        ("tensorboard", TensorBoardTracker),
        ("mlflow", MLflowTracker),
        ("wandb", WandbTracker),
    ],
)
def test_make_tracker_picks_the_backend_and_writes_under_run_dir(tmp_path, backend, kind):
    tracker = make_tracker(TrackerConfig(backend=backend), tmp_path, "run-1")
    try:
        assert type(tracker) is kind
        assert isinstance(tracker, Tracker)
        tracker.log_metrics({"round/best_val_loss": 1.0}, step=1)
    finally:
        tracker.close()
    expected = {
        "log": str(tmp_path / "figures"),
        "stdout": str(tmp_path / "figures"),
        "none": None,
        "tensorboard": str(tmp_path / "tensorboard" / "run-1"),
        "mlflow": (tmp_path / "mlruns").resolve().as_uri(),
    }
    if backend == "wandb":
        assert Path(tracker.log_dir).parent == tmp_path / "wandb"
    else:
        assert tracker.log_dir == expected[backend]


def test_make_tracker_takes_relative_uris_under_run_dir_and_uses_the_experiment(tmp_path):
    config = {"backend": "mlflow", "uri": "tracking", "experiment": "exp-2"}
    with make_tracker(config, tmp_path, "run-2") as tracker:
        assert tracker.log_dir == (tmp_path / "tracking").resolve().as_uri()
    client, run = _mlflow_run(tracker)
    assert client.get_experiment(run.info.experiment_id).name == "exp-2"
    assert run.info.run_name == "run-2"
    with make_tracker(TrackerConfig(backend="tensorboard", uri="tb"), tmp_path, "r") as tracker:
        assert tracker.log_dir == str(tmp_path / "tb" / "r")
    absolute = tmp_path / "elsewhere"
    with make_tracker({"backend": "stdout", "uri": str(absolute)}, tmp_path, "r") as tracker:
        assert tracker.log_dir == str(absolute)
    with pytest.raises(TypeError, match="TrackerConfig"):
        make_tracker("mlflow", tmp_path, "r")


def test_the_default_tracker_logs_metrics_at_debug_only(tmp_path, caplog):
    tracker = make_tracker(None, tmp_path, "run-3")
    assert type(tracker) is LogTracker
    with caplog.at_level(logging.INFO, logger="sbi_rounds.metrics"):
        tracker.log_metrics({"val_loss": 1.5}, step=2)
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="sbi_rounds.metrics"):
        tracker.log_metrics({"val_loss": 1.25}, step=3)
        tracker.log_params({"lr": 0.1})
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert caplog.records[0].getMessage() == "[run-3] step=3 val_loss=1.25"
    assert caplog.records[1].getMessage() == "[run-3] params lr=0.1"


@pytest.mark.parametrize(
    ("backend", "module"),
    [("mlflow", "mlflow"), ("wandb", "wandb"), ("tensorboard", "tensorboard")],
)
def test_a_missing_package_names_the_extra_to_install(tmp_path, monkeypatch, backend, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingExtraError, match=rf'pip install "sbi-rounds\[{backend}\]"') as e:
        make_tracker(TrackerConfig(backend=backend), tmp_path, "run-1")
    assert isinstance(e.value, ImportError)
    assert f"the {backend} backend needs" in str(e.value)


# ------------------------------------------------------------------- shared behaviour


@pytest.mark.filterwarnings("ignore:Maximum number of epochs:UserWarning")
def test_sbi_accepts_our_trackers():
    from sbi.inference import NPE
    from sbi.utils import BoxUniform

    stream = io.StringIO()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        prior = BoxUniform(-torch.ones(1), torch.ones(1))
        theta = prior.sample((64,))
        inference = NPE(prior, density_estimator="mdn", tracker=StdoutTracker(stream))
        inference.append_simulations(theta, theta + 0.1 * torch.randn_like(theta))
        inference.train(max_num_epochs=2, training_batch_size=32, show_train_summary=False)
    assert "step=1 best_validation_loss=" in stream.getvalue()
    assert "step=1 training_loss=" in stream.getvalue()


def test_input_is_checked_the_same_way_by_every_backend():
    tracker = NullTracker()
    with pytest.raises(TypeError, match="real number"):
        tracker.log_metrics({"loss": "low"})
    with pytest.raises(TypeError, match="real number"):
        tracker.log_metrics({"loss": torch.ones(2)})
    with pytest.raises(TypeError, match="step must be an integer"):
        tracker.log_metrics({"loss": 1.0}, step=1.5)
    with pytest.raises(ValueError, match="step must be >= 0"):
        tracker.log_metrics({"loss": 1.0}, step=-1)
    with pytest.raises(TypeError, match="matplotlib Figure"):
        tracker.add_figure("posterior", object())
    tracker.log_metrics({"loss": torch.tensor(0.5)}, step=torch.tensor(3))
    tracker.close()
    tracker.close()
    with pytest.raises(RuntimeError, match="was closed"):
        tracker.log_metric("loss", 1.0)
