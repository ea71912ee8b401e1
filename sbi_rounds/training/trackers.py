"""Experiment trackers: one protocol and thin adapters for stdout, TensorBoard, MLflow and W&B."""

from __future__ import annotations

import importlib
import io
import math
import os
import posixpath
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, Any, Literal, Protocol, Self, runtime_checkable

from sbi_rounds.training.config import TrackerConfig

__all__ = [
    "MLflowTracker",
    "MissingExtraError",
    "NullTracker",
    "StdoutTracker",
    "TensorBoardTracker",
    "Tracker",
    "WandbTracker",
    "flatten_params",
    "make_tracker",
]

#: MLflow's limits (``mlflow.utils.validation``, MLflow >= 2.16): longer parameter values
#: are truncated, longer names are refused.
MLFLOW_MAX_PARAM_LENGTH = 6000
MLFLOW_MAX_NAME_LENGTH = 250
_MLFLOW_PARAMS_PER_BATCH = 100
_MLFLOW_METRICS_PER_BATCH = 1000
_MLFLOW_NAME = re.compile(r"^[/\w.\- :]+$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")
_MLFLOW_BARE_URIS = frozenset({"databricks", "databricks-uc", "uc"})
_SCALARS = (bool, int, float, str, type(None))


@runtime_checkable
class Tracker(Protocol):
    """Where training metrics, parameters and figures go.

    Structurally a superset of sbi 0.27's ``sbi.sbi_types.Tracker`` (which lacks
    ``close``), so any tracker here can also be handed to sbi.
    """

    @property
    def log_dir(self) -> str | None:
        """Where the backend writes (a directory or a tracking URI), or None."""
        ...

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one scalar, e.g. ``log_metric("round/best_val_loss", 1.2, step=3)``."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several scalars that share one step."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters; nested mappings become dotted names."""
        ...

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        """Log a matplotlib figure (the figure is left open)."""
        ...

    def flush(self) -> None:
        """Push buffered records to the backend."""
        ...

    def close(self) -> None:
        """Flush and release the backend; later logging raises. Closing twice is a no-op."""
        ...


class MissingExtraError(ImportError):
    """An optional package a tracker backend needs is not installed."""


def flatten_params(params: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """Flatten nested mappings into one level of dotted names with scalar values.

    Every backend logs what this returns, so all of them show the same names and values.

    Args:
        params: Parameters; values may be mappings (flattened recursively), ``bool``,
            ``int``, ``float``, ``str`` or None (kept), zero-dimensional tensors or arrays
            (turned into Python numbers) or anything else (turned into ``str``). An empty
            mapping becomes the string ``"{}"``.
        sep: What joins a parent's name and a child's name.

    Returns:
        A flat dict, e.g. ``{"train.batch_size": 50, "bounds": "[0, 1]"}`` for
        ``{"train": {"batch_size": 50}, "bounds": [0, 1]}``.

    Raises:
        TypeError: If ``params`` is not a mapping.
        ValueError: If two entries flatten to the same name, e.g. ``{"a.b": 1, "a": {"b": 2}}``.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping of names to values, got {type(params).__name__}; "
            "pass e.g. {'batch_size': 50} or config.model_dump()"
        )
    flat: dict[str, Any] = {}
    _flatten_into(flat, params, "", sep)
    return flat


def _flatten_into(flat: dict[str, Any], params: Mapping[Any, Any], parent: str, sep: str) -> None:
    for key, value in params.items():
        name = f"{parent}{sep}{key}" if parent else str(key)
        if isinstance(value, Mapping) and value:
            _flatten_into(flat, value, name, sep)
            continue
        if name in flat:
            raise ValueError(
                f"two parameters flatten to the name {name!r}; rename one of them "
                f"(nested mappings are joined with {sep!r})"
            )
        flat[name] = _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return "{}"
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return str(value)


def _param_text(value: Any) -> str:
    return str(value)


def _safe_relpath(name: str, empty: str) -> str:
    """``name`` as a relative path that stays inside its parent: ``a/b c/..`` -> ``a/b_c``."""
    parts = [re.sub(r"[^\w.\-]+", "_", p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or empty


def _figure_path(name: str, step: int | None) -> str:
    """A relative file path for a figure: ``round/posterior`` -> ``round/posterior_step3.png``."""
    return f"{_safe_relpath(name, 'figure')}{'' if step is None else f'_step{step}'}.png"


def _is_uri(text: str) -> bool:
    """Whether ``text`` is a URI (``file:``, ``sqlite:``, ``http:``, ``databricks``), not a path."""
    return text in _MLFLOW_BARE_URIS or _URI_SCHEME.match(text) is not None


def _require(module: str, backend: str, what: str) -> ModuleType:
    """Import an optional package, or raise an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f'the {backend} backend needs {what}: pip install "sbi-rounds[{backend}]" '
            f"(import {module} failed: {error})"
        ) from error


class _BaseTracker:
    """Validation, parameter bookkeeping and the context manager shared by all adapters.

    Subclasses implement ``_write_metrics``, ``_write_params``, ``_write_figure`` and
    optionally ``_flush`` and ``_close``; they receive validated, flattened input.
    A parameter keeps the value it was first logged with (MLflow and W&B refuse a change);
    logging it again with the same value is a no-op, with another value a ``ValueError``.
    """

    def __init__(self) -> None:
        self._params: dict[str, str] = {}
        self._closed = False

    @property
    def log_dir(self) -> str | None:
        """Where the backend writes, or None."""
        return None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one scalar under ``name`` (``/`` groups names, e.g. ``round/best_val_loss``)."""
        self.log_metrics({name: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several scalars that share one step (an epoch, or a round for ``round/...``).

        Raises:
            TypeError: If a name is not a string, a value is not a real number or the step
                is not an integer.
            ValueError: If a name is empty or the step is negative.
            RuntimeError: If the tracker was closed.
        """
        self._check_open()
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}; "
                "pass e.g. {'train_loss': 1.2}"
            )
        step = _check_step(step)
        values: dict[str, float] = {}
        for name, value in metrics.items():
            _check_name(name, "metric")
            values[name] = _check_number(name, value)
        if values:
            self._write_metrics(values, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters, flattened with :func:`flatten_params`.

        Raises:
            ValueError: If a parameter was logged before with another value.
            RuntimeError: If the tracker was closed.
        """
        self._check_open()
        new: dict[str, Any] = {}
        for name, value in flatten_params(params).items():
            text = _param_text(value)
            old = self._params.get(name)
            if old is None:
                new[name] = value
            elif old != text:
                raise ValueError(
                    f"parameter {name!r} was logged as {old!r} and cannot change to {text!r} "
                    "(MLflow and W&B keep a run's first value); log it under another name, "
                    "e.g. with TrackerCallback(tracker, prefix='round_2.')"
                )
        if new:
            self._write_params(new)
            self._params.update({name: _param_text(value) for name, value in new.items()})

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        """Log a matplotlib figure under ``name``; the figure is not closed.

        Raises:
            TypeError: If ``figure`` is not a matplotlib figure.
            RuntimeError: If the tracker was closed.
        """
        self._check_open()
        _check_name(name, "figure")
        step = _check_step(step)
        if not callable(getattr(figure, "savefig", None)):
            raise TypeError(
                f"add_figure needs a matplotlib Figure, got {type(figure).__name__}; "
                "pass e.g. fig from fig, ax = plt.subplots()"
            )
        self._write_figure(name, figure, step)

    def flush(self) -> None:
        """Push buffered records to the backend."""
        if not self._closed:
            self._flush()

    def close(self) -> None:
        """Flush and release the backend. Closing twice is a no-op."""
        self._finish(failed=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish(failed=exc_type is not None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}(log_dir={self.log_dir!r}, {state})"

    def _finish(self, failed: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._close(failed)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"this {type(self).__name__} was closed; create a new tracker (make_tracker) "
                "to log more"
            )

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        raise NotImplementedError

    def _write_params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        """Nothing is buffered unless a subclass says otherwise."""

    def _close(self, failed: bool) -> None:
        self._flush()


def _check_name(name: Any, kind: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"a {kind} name must be a string, got {type(name).__name__} {name!r}")
    if not name.strip():
        raise ValueError(f"a {kind} name must not be empty; use e.g. 'train_loss'")


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise TypeError(f"metric {name!r} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"metric {name!r} must be a real number (or a one-element tensor), "
            f"got {type(value).__name__}; log e.g. loss.item()"
        ) from error


def _check_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, int):
        if getattr(step, "ndim", None) == 0 and hasattr(step, "item"):
            step = step.item()
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an integer or None, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return int(step)


def _format_number(value: float, precision: int) -> str:
    return f"{value:.{precision}g}" if math.isfinite(value) else str(value)


class StdoutTracker(_BaseTracker):
    """Prints one terse line per call, e.g. ``[run-1] step=3 train_loss=1.234 val_loss=1.3``.

    Args:
        stream: Where lines go; None writes to the current ``sys.stdout`` at each call.
        prefix: Shown in brackets at the start of every line (the run name); empty: none.
        figure_dir: Figures are saved there as PNG files (``round/posterior`` at step 3
            becomes ``figure_dir/round/posterior_step3.png``); None prints that the figure
            was not saved.
        precision: Significant digits of the printed numbers.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        prefix: str = "",
        figure_dir: str | os.PathLike[str] | None = None,
        precision: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(precision, int) or precision < 1:
            raise ValueError(f"precision must be an integer >= 1, got {precision!r}")
        self._stream = stream
        self._prefix = f"[{prefix}] " if prefix else ""
        self._figure_dir = None if figure_dir is None else Path(figure_dir)
        self._precision = precision

    @property
    def log_dir(self) -> str | None:
        """The figure directory, or None."""
        return None if self._figure_dir is None else str(self._figure_dir)

    def _print(self, text: str) -> None:
        stream = sys.stdout if self._stream is None else self._stream
        print(f"{self._prefix}{text}", file=stream)

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        fields = " ".join(f"{k}={_format_number(v, self._precision)}" for k, v in metrics.items())
        self._print(fields if step is None else f"step={step} {fields}")

    def _write_params(self, params: dict[str, Any]) -> None:
        self._print("params " + " ".join(f"{k}={v}" for k, v in params.items()))

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        where = "" if step is None else f" step={step}"
        if self._figure_dir is None:
            self._print(f"figure {name}{where} not saved (StdoutTracker has no figure_dir)")
            return
        path = self._figure_dir / _figure_path(name, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
        self._print(f"figure {name}{where} -> {path}")

    def _flush(self) -> None:
        stream = sys.stdout if self._stream is None else self._stream
        stream.flush()


class NullTracker(_BaseTracker):
    """Checks its input like the others and discards it (backend ``none``)."""

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        pass

    def _write_params(self, params: dict[str, Any]) -> None:
        pass

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        pass


class TensorBoardTracker(_BaseTracker):
    """Writes TensorBoard event files with ``torch.utils.tensorboard.SummaryWriter``.

    Metrics are scalars tagged with their name; each :meth:`log_params` call adds one
    Markdown table to the text tag ``params``; figures are images tagged with their name.

    Args:
        log_dir: The event files' directory (created when missing).
        flush_secs: How often the writer flushes on its own.

    Raises:
        MissingExtraError: If TensorBoard is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, flush_secs: int = 30) -> None:
        super().__init__()
        _require("tensorboard", "tensorboard", "TensorBoard")
        tensorboard = _require("torch.utils.tensorboard", "tensorboard", "TensorBoard")
        self._writer = tensorboard.SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)
        self._params_calls = 0

    @property
    def log_dir(self) -> str:
        """The event files' directory."""
        return str(self._writer.log_dir)

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, global_step=step)

    def _write_params(self, params: dict[str, Any]) -> None:
        rows = "\n".join(
            f"| {_markdown(name)} | {_markdown(_param_text(value))} |"
            for name, value in params.items()
        )
        table = f"| parameter | value |\n|---|---|\n{rows}"
        self._writer.add_text("params", table, global_step=self._params_calls)
        self._params_calls += 1

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        self._writer.add_figure(name, figure, global_step=step, close=False)

    def _flush(self) -> None:
        self._writer.flush()

    def _close(self, failed: bool) -> None:
        self._writer.close()


def _markdown(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class MLflowTracker(_BaseTracker):
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
        _require("mlflow", "mlflow", "MLflow")
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
            text = _param_text(value)
            if len(text) > MLFLOW_MAX_PARAM_LENGTH:
                text = text[: MLFLOW_MAX_PARAM_LENGTH - 3] + "..."
            entries.append(self._param_cls(name, text))
        for i in range(0, len(entries), _MLFLOW_PARAMS_PER_BATCH):
            batch = entries[i : i + _MLFLOW_PARAMS_PER_BATCH]
            self._client.log_batch(self._run_id, params=batch)

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        artifact = f"figures/{_figure_path(name, step)}"
        self._client.log_figure(self._run_id, figure, artifact)

    def _close(self, failed: bool) -> None:
        self._client.set_terminated(self._run_id, status="FAILED" if failed else "FINISHED")


def _mlflow_uri(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    return text if _is_uri(text) else Path(text).expanduser().resolve().as_uri()


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


class WandbTracker(_BaseTracker):
    """Logs to one Weights & Biases run, offline by default (no account needed).

    W&B wants steps that only grow, while rounds and epochs restart. So every name
    group (the part before the last ``/``) gets its own x-axis: ``train_loss`` at step 3
    is logged with ``step=3`` and ``round/best_val_loss`` at round 1 with
    ``round/step=1`` (``wandb.define_metric``). Those step names are therefore reserved.
    Parameters go to ``run.config``, figures become ``wandb.Image`` entries.

    Args:
        directory: W&B writes its ``wandb/`` folder in there (created when missing).
        project: The W&B project.
        run_name: The run's display name; None lets W&B pick one.
        mode: ``offline`` (write locally; ``wandb sync`` uploads later), ``online`` or
            ``disabled``.
        settings: More ``wandb.Settings`` fields, e.g. ``{"x_disable_stats": True}``.
            ``console`` defaults to ``"off"`` so W&B does not wrap ``sys.stdout``.

    Raises:
        MissingExtraError: If wandb is not installed.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        project: str = "sbi-rounds",
        run_name: str | None = None,
        mode: Literal["offline", "online", "disabled"] = "offline",
        *,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"mode must be 'offline', 'online' or 'disabled', got {mode!r}")
        wandb = _require("wandb", "wandb", "Weights & Biases")
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._wandb, self._mode = wandb, mode
        self._run = wandb.init(
            dir=os.fspath(directory),
            project=project,
            name=run_name,
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(**{"console": "off", **dict(settings or {})}),
        )
        self._defined: dict[str, str] = {}

    @property
    def log_dir(self) -> str | None:
        """The run's local directory (``.../wandb/offline-run-<time>-<id>``); None if disabled."""
        return None if self._mode == "disabled" else str(Path(self._run.dir).parent)

    @property
    def run(self) -> Any:
        """The ``wandb.Run``."""
        return self._run

    def _step_key(self, name: str) -> str:
        group = name.rpartition("/")[0]
        return f"{group}/step" if group else "step"

    def _define(self, name: str) -> str:
        key = self._defined.get(name)
        if key is None:
            key = self._step_key(name)
            if name == key or name in self._defined.values():
                raise ValueError(
                    f"the wandb backend uses {name!r} as the x-axis of the metrics in its "
                    "group; rename the metric, e.g. to 'global_step'"
                )
            if key not in self._defined.values():
                self._run.define_metric(key, hidden=True)
            self._run.define_metric(name, step_metric=key)
            self._defined[name] = key
        return key

    def _payload(self, values: dict[str, Any], step: int | None) -> dict[str, Any]:
        payload = dict(values)
        for name in values:
            key = self._define(name)
            if step is not None:
                payload[key] = step
        return payload

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        self._run.log(self._payload(metrics, step))

    def _write_params(self, params: dict[str, Any]) -> None:
        self._run.config.update(params)

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        # Rendered here: wandb.Image(figure) fails unless matplotlib.pyplot was imported.
        from PIL import Image

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        buffer.seek(0)
        with Image.open(buffer) as png:
            png.load()
            image = self._wandb.Image(png)
        self._run.log(self._payload({name: image}, step))

    def _close(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


def _under(run_dir: Path, uri: str | None, default: str) -> Path:
    if uri is None:
        return run_dir / default
    path = Path(uri).expanduser()
    return path if path.is_absolute() else run_dir / path


def make_tracker(
    config: TrackerConfig | Mapping[str, Any] | None,
    run_dir: str | os.PathLike[str],
    run_name: str,
) -> Tracker:
    """Build the tracker that ``config.backend`` names.

    Where each backend writes (a relative ``config.uri`` is taken under ``run_dir``):

    - ``stdout``: prints to ``sys.stdout``; figures are saved under ``uri`` or
      ``run_dir/figures``.
    - ``tensorboard``: event files in ``uri/<run_name>`` or ``run_dir/tensorboard/<run_name>``.
    - ``mlflow``: the tracking URI ``uri`` (a path becomes a ``file:`` URI) or
      ``file://<run_dir>/mlruns``; experiment ``config.experiment``, run ``run_name``.
    - ``wandb``: W&B's ``wandb/`` folder inside ``uri`` or ``run_dir``; project
      ``config.experiment``, mode ``config.wandb_mode``.
    - ``none``: a :class:`NullTracker`; ``uri`` is not used.

    Args:
        config: The tracker settings; a mapping is validated into a ``TrackerConfig``,
            None means ``TrackerConfig()`` (stdout).
        run_dir: The run's directory.
        run_name: The run's name (TensorBoard folder, MLflow and W&B run name).

    Returns:
        A :class:`Tracker`; close it when done (or use it in a ``with`` block).

    Raises:
        MissingExtraError: If the backend's optional package is not installed; the message
            names the extra, e.g. ``pip install "sbi-rounds[mlflow]"``.
    """
    if config is None:
        config = TrackerConfig()
    elif isinstance(config, Mapping):
        config = TrackerConfig.model_validate(dict(config))
    elif not isinstance(config, TrackerConfig):
        raise TypeError(
            f"config must be a TrackerConfig, got {type(config).__name__}; "
            "pass e.g. TrackerConfig(backend='mlflow')"
        )
    if not isinstance(run_name, str) or not run_name.strip():
        raise ValueError(f"run_name must be a non-empty string, got {run_name!r}")
    run_dir = Path(run_dir)
    backend = config.backend
    if backend == "none":
        return NullTracker()
    if backend == "stdout":
        return StdoutTracker(prefix=run_name, figure_dir=_under(run_dir, config.uri, "figures"))
    if backend == "tensorboard":
        base = _under(run_dir, config.uri, "tensorboard")
        return TensorBoardTracker(base / _safe_relpath(run_name, "run"))
    if backend == "mlflow":
        if config.uri is not None and _is_uri(config.uri):
            uri = config.uri
        else:
            uri = _under(run_dir, config.uri, "mlruns").expanduser().resolve().as_uri()
        return MLflowTracker(uri, experiment=config.experiment, run_name=run_name)
    if backend == "wandb":
        return WandbTracker(
            _under(run_dir, config.uri, "."),
            project=config.experiment,
            run_name=run_name,
            mode=config.wandb_mode,
        )
    raise ValueError(  # unreachable with a validated TrackerConfig
        f"unknown tracker backend {backend!r}; use stdout, tensorboard, mlflow, wandb or none"
    )
