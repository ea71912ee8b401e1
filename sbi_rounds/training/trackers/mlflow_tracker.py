"""MLflow: metrics, parameters and figures in a run of an experiment, local or on a server."""

from __future__ import annotations

import os
import posixpath
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sbi_rounds.training.trackers.base import (
    BaseTracker,
    figure_path,
    is_uri,
    param_text,
    require_extra,
)

__all__ = ["MLFLOW_MAX_NAME_LENGTH", "MLFLOW_MAX_PARAM_LENGTH", "MLflowTracker"]

#: MLflow's limits (``mlflow.utils.validation``, MLflow >= 2.16): longer parameter values
#: are truncated, longer names are refused.
MLFLOW_MAX_PARAM_LENGTH = 6000
MLFLOW_MAX_NAME_LENGTH = 250
_MLFLOW_PARAMS_PER_BATCH = 100
_MLFLOW_METRICS_PER_BATCH = 1000
_MLFLOW_NAME = re.compile(r"^[/\w.\- :]+$")


class MLflowTracker(BaseTracker):
    """Logs to one MLflow run through ``MlflowClient`` (no global active run is touched).

    Parameters are flattened and stringified; values longer than MLflow's limit of
    6000 characters are cut and end in ``...``. Metric names may contain ``/``.
    Figures become PNG artifacts under ``figures/``. The run ends ``FINISHED`` on
    :meth:`close` and ``FAILED`` when a ``with`` block raises.

    A local path or ``file:`` URI uses MLflow's file store. MLflow >= 3 refuses that
    store unless the environment variable ``MLFLOW_ALLOW_FILE_STORE`` is true: for such
    URIs this class sets it to ``true`` in ``os.environ`` when it is unset (set it to
    ``false`` yourself to get MLflow's refusal). For a ``sqlite:///path/mlflow.db`` URI,
    a new experiment's artifacts go to ``path/mlartifacts`` (MLflow's default would be
    ``./mlruns`` in the working directory).

    Args:
        tracking_uri: e.g. ``file:///abs/mlruns``, ``sqlite:///abs/mlflow.db``,
            ``http://host:5000`` or a local directory.
        experiment: The experiment's name; created when missing.
        run_name: The run's name; None lets MLflow pick one.
        tags: Tags of the new run.

    Raises:
        MissingExtraError: If MLflow is not installed.
        ValueError: If the experiment exists but was deleted.
    """

    def __init__(
        self,
        tracking_uri: str | os.PathLike[str],
        experiment: str = "sbi-rounds",
        run_name: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        require_extra("mlflow", "mlflow", "MLflow")
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = _mlflow_uri(tracking_uri)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._metric_cls, self._param_cls = Metric, Param
        self._uri = uri
        self._client = MlflowClient(tracking_uri=uri)
        found = self._client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self._client.create_experiment(
                    experiment, artifact_location=_mlflow_artifact_location(uri)
                )
            except MlflowException:  # created meanwhile by another process
                found = self._client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        elif found.lifecycle_stage == "deleted":
            raise ValueError(
                f"the MLflow experiment {experiment!r} at {uri} was deleted; restore it "
                "(MlflowClient(uri).restore_experiment(id)) or choose another experiment name"
            )
        else:
            experiment_id = found.experiment_id
        run = self._client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        self._run_id: str = run.info.run_id
        self._experiment_id: str = experiment_id

    @property
    def log_dir(self) -> str:
        """The tracking URI."""
        return self._uri

    @property
    def run_id(self) -> str:
        """The MLflow run's id."""
        return self._run_id

    @property
    def experiment_id(self) -> str:
        """The MLflow experiment's id."""
        return self._experiment_id

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        timestamp = int(time.time() * 1000)
        entries = []
        for name, value in metrics.items():
            _check_mlflow_name(name, "metric")
            entries.append(self._metric_cls(name, value, timestamp, step or 0))
        for i in range(0, len(entries), _MLFLOW_METRICS_PER_BATCH):
            batch = entries[i : i + _MLFLOW_METRICS_PER_BATCH]
            self._client.log_batch(self._run_id, metrics=batch)

    def _write_params(self, params: dict[str, Any]) -> None:
        entries = []
        for name, value in params.items():
            _check_mlflow_name(name, "parameter")
            text = param_text(value)
            if len(text) > MLFLOW_MAX_PARAM_LENGTH:
                text = text[: MLFLOW_MAX_PARAM_LENGTH - 3] + "..."
            entries.append(self._param_cls(name, text))
        for i in range(0, len(entries), _MLFLOW_PARAMS_PER_BATCH):
            batch = entries[i : i + _MLFLOW_PARAMS_PER_BATCH]
            self._client.log_batch(self._run_id, params=batch)

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        artifact = f"figures/{figure_path(name, step)}"
        self._client.log_figure(self._run_id, figure, artifact)

    def _close(self, failed: bool) -> None:
        self._client.set_terminated(self._run_id, status="FAILED" if failed else "FINISHED")


def _mlflow_uri(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    return text if is_uri(text) else Path(text).expanduser().resolve().as_uri()


def _mlflow_artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        return (database.expanduser().resolve().parent / "mlartifacts").as_uri()
    return None


def _check_mlflow_name(name: str, kind: str) -> None:
    if (
        len(name) > MLFLOW_MAX_NAME_LENGTH
        or not _MLFLOW_NAME.match(name)
        or posixpath.normpath(name) != name
        or name == "."
        or name.startswith(("/", ".."))
    ):
        raise ValueError(
            f"MLflow cannot store the {kind} name {name!r}: names have at most "
            f"{MLFLOW_MAX_NAME_LENGTH} characters from letters, digits, '_', '-', '.', ' ', ':' "
            "and '/', and must not start or end with '/' or contain '//', './' or '..'; "
            "rename it, e.g. 'round/best_val_loss'"
        )
