"""Experiment trackers: one protocol and thin adapters (log, stdout, TensorBoard, MLflow, W&B)."""

from sbi_rounds.training.trackers.base import MissingExtraError, Tracker, flatten_params
from sbi_rounds.training.trackers.factory import make_tracker
from sbi_rounds.training.trackers.local import LogTracker, NullTracker, StdoutTracker
from sbi_rounds.training.trackers.mlflow_tracker import (
    MLFLOW_MAX_NAME_LENGTH,
    MLFLOW_MAX_PARAM_LENGTH,
    MLflowTracker,
)
from sbi_rounds.training.trackers.tensorboard_tracker import TensorBoardTracker
from sbi_rounds.training.trackers.wandb_tracker import WandbTracker

__all__ = [
    "MLFLOW_MAX_NAME_LENGTH",
    "MLFLOW_MAX_PARAM_LENGTH",
    "LogTracker",
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
