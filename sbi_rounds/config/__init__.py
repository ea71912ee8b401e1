"""The run configuration: one typed, validated model for the CLI, config files and Prefect.

Each setting is declared once, as a field of :class:`RunConfig` or of one of its sections;
the command line (``flows.cli``), the environment variables and the Prefect form are
generated from the fields.
"""

from sbi_rounds.config.campaign import CampaignConfig
from sbi_rounds.config.checks import DiagnosticsConfig, StallConfig
from sbi_rounds.config.cluster import ClusterConfig, JobqueueConfig
from sbi_rounds.config.console import ConsoleConfig
from sbi_rounds.config.continuation import ContinuationConfig
from sbi_rounds.config.files import config_differences, format_validation_error, load_config_file
from sbi_rounds.config.network import NetworkConfig
from sbi_rounds.config.problem import PriorConfig, SimulatorConfig
from sbi_rounds.config.run import (
    ALL_IDENTITY_FIELDS,
    IDENTITY_FIELDS,
    METHOD_IDENTITY_FIELDS,
    RunConfig,
    identity_fields,
    identity_of,
)
from sbi_rounds.config.start import StartConfig
from sbi_rounds.methods import (
    CLASSIFIER_MODELS,
    DENSITY_MODELS,
    VECTOR_FIELD_MODELS,
    FlowMatchingConfig,
    NPELossConfig,
    NRELossConfig,
    PosteriorConfig,
    ScoreMatchingConfig,
    TruncationConfig,
)
from sbi_rounds.training.config import SchedulerConfig, TrackerConfig, TrainConfig

__all__ = [
    "ALL_IDENTITY_FIELDS",
    "CLASSIFIER_MODELS",
    "DENSITY_MODELS",
    "IDENTITY_FIELDS",
    "METHOD_IDENTITY_FIELDS",
    "VECTOR_FIELD_MODELS",
    "CampaignConfig",
    "ClusterConfig",
    "ConsoleConfig",
    "ContinuationConfig",
    "DiagnosticsConfig",
    "FlowMatchingConfig",
    "JobqueueConfig",
    "NPELossConfig",
    "NRELossConfig",
    "NetworkConfig",
    "PosteriorConfig",
    "PriorConfig",
    "RunConfig",
    "SchedulerConfig",
    "ScoreMatchingConfig",
    "SimulatorConfig",
    "StallConfig",
    "StartConfig",
    "TrackerConfig",
    "TrainConfig",
    "TruncationConfig",
    "config_differences",
    "format_validation_error",
    "identity_fields",
    "identity_of",
    "load_config_file",
]
