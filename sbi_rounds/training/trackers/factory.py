"""``make_tracker``: the tracker the settings name, writing under the run's directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sbi_rounds.training.config import TrackerConfig
from sbi_rounds.training.trackers.base import Tracker, is_uri, safe_relpath
from sbi_rounds.training.trackers.local import LogTracker, NullTracker, StdoutTracker
from sbi_rounds.training.trackers.mlflow_tracker import MLflowTracker
from sbi_rounds.training.trackers.tensorboard_tracker import TensorBoardTracker
from sbi_rounds.training.trackers.wandb_tracker import WandbTracker

__all__ = ["make_tracker"]


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

    - ``log`` (default): DEBUG records of the ``sbi_rounds.metrics`` logger; figures are
      saved under ``uri`` or ``run_dir/figures``.
    - ``stdout``: prints to ``sys.stdout``; figures as for ``log``.
    - ``tensorboard``: event files in ``uri/<run_name>`` or ``run_dir/tensorboard/<run_name>``.
    - ``mlflow``: the tracking URI ``uri`` (a path becomes a ``file:`` URI) or
      ``file://<run_dir>/mlruns``; experiment ``config.experiment``, run ``run_name``.
    - ``wandb``: W&B's ``wandb/`` folder inside ``uri`` or ``run_dir``; project
      ``config.experiment``, mode ``config.wandb_mode``.
    - ``none``: a :class:`NullTracker`; ``uri`` is not used.

    Args:
        config: The tracker settings; a mapping is validated into a ``TrackerConfig``,
            None means ``TrackerConfig()`` (log).
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
    if backend == "log":
        return LogTracker(prefix=run_name, figure_dir=_under(run_dir, config.uri, "figures"))
    if backend == "stdout":
        return StdoutTracker(prefix=run_name, figure_dir=_under(run_dir, config.uri, "figures"))
    if backend == "tensorboard":
        base = _under(run_dir, config.uri, "tensorboard")
        return TensorBoardTracker(base / safe_relpath(run_name, "run"))
    if backend == "mlflow":
        if config.uri is not None and is_uri(config.uri):
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
        f"unknown tracker backend {backend!r}; use log, stdout, tensorboard, mlflow, wandb or none"
    )
