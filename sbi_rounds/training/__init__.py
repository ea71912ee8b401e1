"""The unified training runner: one loop for NPE, NLE and NRE losses.

Owns the loop, its callbacks (early stopping, checkpoints, trackers) and its settings; it
imports no other part of the library, so it trains any network with any loss.
"""

from sbi_rounds.training.callbacks import (
    EVENTS,
    Callback,
    CheckpointCallback,
    CheckpointSink,
    Divergence,
    LearningRateThreshold,
    ProgressBar,
    StoppingRule,
    StopWhen,
    TrackerCallback,
    ValidationLossPatience,
)
from sbi_rounds.training.config import SBI_KEYWORDS, SchedulerConfig, TrackerConfig, TrainConfig
from sbi_rounds.training.runner import (
    LossFn,
    TrainingLoop,
    TrainingState,
    TrainingSummary,
    default_callbacks,
    flatten_parameters,
    make_scheduler,
    run_training,
    split_train_val,
)

__all__ = [
    "EVENTS",
    "SBI_KEYWORDS",
    "Callback",
    "CheckpointCallback",
    "CheckpointSink",
    "Divergence",
    "LearningRateThreshold",
    "LossFn",
    "ProgressBar",
    "SchedulerConfig",
    "StopWhen",
    "StoppingRule",
    "TrackerCallback",
    "TrackerConfig",
    "TrainConfig",
    "TrainingLoop",
    "TrainingState",
    "TrainingSummary",
    "ValidationLossPatience",
    "default_callbacks",
    "flatten_parameters",
    "make_scheduler",
    "run_training",
    "split_train_val",
]
