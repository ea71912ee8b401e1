"""The typed records a round keeps in the run file: one frozen, validated model per kind.

Each record is a JSON string in an attribute of the round's group (the attribute names are
the file format, unchanged since format 1), written and read by exactly one method pair of
``RunStore``:

- ``seconds_per_simulation`` (``float``): the simulate stage;
  ``write_seconds_per_simulation`` / ``seconds_per_simulation``.
- ``training_attempts`` (``list[TrainingAttempt]``) and ``training_summary``
  (:class:`TrainingSummaryRecord`): the train stage; ``finish_training_attempt`` (and
  ``write_network``) / ``training_attempts``, ``training_summary``. The network's
  :class:`NetworkArchitecture` is the ``architecture`` attribute of its ``network`` group
  (``write_network`` / ``read_network``).
- ``posterior_summary`` and ``pairplot`` (together a :class:`PosteriorSummary`): the
  checkpoint stage; ``write_posterior_summary`` / ``posterior_summary``.
- ``prior_mass`` (:class:`PriorMass`): the posterior stage of methods whose sampler rejects
  draws outside the prior; ``write_prior_mass`` / ``prior_mass``.
- ``diagnostics`` (:class:`RoundDiagnostics`) and, on round 1, ``calibration``
  (:class:`Calibration`): the checks; ``write_diagnostics`` / ``diagnostics``,
  ``calibration``.

The round's seconds per stage are a dataset, read as :class:`Timings` (``timings``).

Writing: an unknown field is an error that names it (``extra="forbid"``), and a value of
the wrong type too; the JSON is ``json.dumps(..., sort_keys=True)`` of the model's fields,
as older versions wrote it, so older versions read what this one writes.

Reading: every record an older version wrote is accepted. Fields added since default to
what they meant before (``None``: not recorded; ``fallback=False``: there was no fallback
network). Keys a record has on disk that its model lacks (a field an older version wrote
and this one retired, or one a newer version added) are dropped when read, not an error:
the file stays readable by every version, and a record rewritten (``diagnose`` filling in
a part) leaves them out.
"""

from __future__ import annotations

from sbi_rounds.store.schema.base import (
    CALIBRATION,
    DIAGNOSTICS,
    PAIRPLOT,
    POSTERIOR_SUMMARY,
    PRIOR_MASS,
    SECONDS_PER_SIMULATION,
    TRAINING_ATTEMPTS,
    TRAINING_SUMMARY,
    Record,
    read_attr,
    write_attr,
)
from sbi_rounds.store.schema.checks import (
    C2st,
    Calibration,
    CheckSeconds,
    Coverage,
    JointCheck,
    Movement,
    ParameterCalibration,
    ParameterMovement,
    ParameterStatistics,
    PredictiveCheck,
    RoundDiagnostics,
    StatisticCheck,
    Tarp,
)
from sbi_rounds.store.schema.network import NetworkArchitecture, Role, ZScore
from sbi_rounds.store.schema.stages import (
    ParameterSummary,
    PosteriorSummary,
    PriorMass,
    RoundCounts,
    StallCheckRecord,
    Timings,
    TrainingAttempt,
    TrainingSummaryRecord,
)

__all__ = [
    "CALIBRATION",
    "DIAGNOSTICS",
    "PAIRPLOT",
    "POSTERIOR_SUMMARY",
    "PRIOR_MASS",
    "SECONDS_PER_SIMULATION",
    "TRAINING_ATTEMPTS",
    "TRAINING_SUMMARY",
    "C2st",
    "Calibration",
    "CheckSeconds",
    "Coverage",
    "JointCheck",
    "NetworkArchitecture",
    "Movement",
    "ParameterCalibration",
    "Tarp",
    "ParameterMovement",
    "ParameterStatistics",
    "ParameterSummary",
    "PosteriorSummary",
    "PriorMass",
    "PredictiveCheck",
    "Record",
    "Role",
    "RoundCounts",
    "RoundDiagnostics",
    "StallCheckRecord",
    "StatisticCheck",
    "Timings",
    "TrainingAttempt",
    "TrainingSummaryRecord",
    "ZScore",
    "read_attr",
    "write_attr",
]
