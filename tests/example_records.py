"""Example records of every kind (``sbi_rounds.store.schema``), for the store's tests."""

from __future__ import annotations

from typing import Any

from sbi_rounds.store.schema import (
    Calibration,
    NetworkArchitecture,
    PosteriorSummary,
    RoundDiagnostics,
    TrainingAttempt,
    TrainingSummaryRecord,
)

__all__ = [
    "architecture",
    "attempt",
    "calibration",
    "diagnostics",
    "posterior_summary",
    "training_summary",
]

STALL_CHECK = {
    "stalled": False,
    "reference": "gaussian",
    "loss": 1.5,
    "reference_loss": 2.0,
    "excess": -0.5,
    "stderr": 0.1,
}


def architecture(**fields: Any) -> NetworkArchitecture:
    """A small MAF posterior network; ``fields`` replace its values."""
    values = {
        "role": "posterior",
        "model": "maf",
        "hidden_features": 8,
        "num_transforms": 1,
        "num_bins": 10,
        "num_components": 10,
        "z_score_theta": "independent",
        "z_score_x": "independent",
        "embedding_net": None,
    }
    return NetworkArchitecture.model_validate({**values, **fields})


def attempt(**fields: Any) -> TrainingAttempt:
    """A kept first training attempt that did not stall; ``fields`` replace its values."""
    values = {
        **STALL_CHECK,
        "attempt": 0,
        "seed": 2**62 + 1,  # seeds use the full 63 bits
        "epochs": 2,
        "stop_reason": "validation loss did not improve for 20 epochs",
        "capped": False,
        "network": "maf",
        "fallback": False,
        "kept": True,
    }
    return TrainingAttempt.model_validate({**values, **fields})


def training_summary(**fields: Any) -> TrainingSummaryRecord:
    """The summary of a 2-epoch training; ``fields`` replace its values."""
    values = {
        "epochs": 2,
        "steps": 8,
        "best_val_loss": 1.5,
        "best_epoch": 2,
        "stop_reason": "reached max_epochs=2",
        "elapsed": 0.25,
        "resumed_from_epoch": 0,
        "training_samples": 40,
        "limit_reached": "max_epochs",
        "batch_size": 10,
        "attempt": 0,
        "stall_check": STALL_CHECK,
    }
    return TrainingSummaryRecord.model_validate({**values, **fields})


def posterior_summary(pairplot: str | None = "round_001_pairplot.png") -> PosteriorSummary:
    """The checkpoint's summary of two parameters."""
    stats = {"mean": 0.5, "std": 0.1, "q05": 0.33, "median": 0.5, "q95": 0.66}
    return PosteriorSummary.model_validate(
        {"parameters": {"a": stats, "b": {**stats, "mean": -0.3}}, "pairplot": pairplot}
    )


def diagnostics(*, truth: bool = False) -> RoundDiagnostics:
    """Every check of a round after the first, with non-finite values as None."""
    stats = {
        "mean": 0.5,
        "std": 0.1,
        "q05": 0.33,
        "q25": 0.43,
        "median": 0.5,
        "q75": 0.57,
        "q95": 0.66,
        "map": 0.51,
    }
    if truth:
        stats |= {"truth": 0.45, "truth_quantile": 0.31}
    statistic = {
        "xobs": 0.5,
        "mean": 0.4,
        "std": 1.0,
        "q05": -1.2,
        "q95": 2.0,
        "quantile": 0.55,
        "p_value": 0.9,
        "z": None,
        "flagged": False,
    }
    return RoundDiagnostics.model_validate(
        {
            "posterior": {"a": stats, "b": {**stats, "map": None}},
            "map": [0.51, 0.2],
            "predictive": {
                "simulations": 20,
                "valid": 19,
                "alpha": 0.01,
                "statistics": {"x_1": statistic},
                "flagged": [],
                "joint": {"distance": 0.4, "p_value": 0.95, "flagged": False},
                "figure": "round_002_predictive.png",
                "simulated_now": 20,
            },
            "movement": {
                "parameters": {
                    "a": {"mean_shift": 0.2, "width_ratio": 0.9},
                    "b": {"mean_shift": None, "width_ratio": None},
                },
                "max_mean_shift": None,
                "max_width_change": None,
            },
            "c2st": {"accuracy": 0.55, "samples": 100, "reference": "reference.npy"},
            "seconds": {"map": 0.5, "predictive": 1.25},
        }
    )


def calibration() -> Calibration:
    """Round 1's calibration of two parameters."""
    parameter = {"ks_p_value": 0.4, "c2st_ranks": 0.52, "c2st_dap": 0.49, "rank_histogram": [3, 5]}
    return Calibration.model_validate(
        {
            "test_simulations": 10,
            "valid": 8,
            "posterior_samples": 50,
            "parameters": {"a": parameter, "b": parameter},
            "rank_bins": [0.0, 25.0, 50.0],
            "coverage": {"levels": [0.5, 0.9], "values": [0.5, 0.875], "ks_p_value": 0.7},
            "warnings": ["a warning"],
            "figures": {"ranks": "calibration_ranks.png", "coverage": "calibration_coverage.png"},
            "estimator": "round 1 (snpe), amortized",
            "note": "why round 1",
        }
    )
