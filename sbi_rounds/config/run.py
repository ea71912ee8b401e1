"""``RunConfig``: everything a run needs, in one typed, validated model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sbi_rounds.config.checks import (
    AUTO_CALIBRATION_SIMULATIONS,
    DiagnosticsConfig,
    StallConfig,
)
from sbi_rounds.config.cluster import ClusterConfig
from sbi_rounds.config.console import ConsoleConfig
from sbi_rounds.config.continuation import ContinuationConfig
from sbi_rounds.config.io import load_vector
from sbi_rounds.config.network import NetworkConfig
from sbi_rounds.config.problem import PriorConfig, SimulatorConfig
from sbi_rounds.config.start import StartConfig, check_start
from sbi_rounds.methods import (
    METHODS,
    FlowMatchingConfig,
    Method,
    NPELossConfig,
    NRELossConfig,
    PosteriorConfig,
    ScoreMatchingConfig,
    TruncationConfig,
    get_method,
)
from sbi_rounds.methods.mcmc import AUTO_DIRECT_SAMPLES, AUTO_MIN_SAMPLES
from sbi_rounds.training.config import TrackerConfig, TrainConfig

__all__ = [
    "ALL_IDENTITY_FIELDS",
    "IDENTITY_FIELDS",
    "LATER_IDENTITY_SETTINGS",
    "METHOD_IDENTITY_FIELDS",
    "RunConfig",
    "identity_fields",
    "identity_of",
]

#: Settings that define what a run computes. Resuming with any of them changed is refused.
IDENTITY_FIELDS = ("xobs", "simulator", "prior", "method", "network", "seed", "npe", "nre", "tsnpe")
#: Method settings that are identity settings of their own method's runs only (they came
#: after runs existed: the fingerprints and run ids of other methods' runs stay as they were).
METHOD_IDENTITY_FIELDS = ("tfmpe", "tnpse")
#: Every setting that is an identity setting of some method's runs (``--allow-change`` names).
ALL_IDENTITY_FIELDS = IDENTITY_FIELDS + METHOD_IDENTITY_FIELDS
#: Identity settings that are part of a run's identity only when set (runs without them keep
#: their ids).
OPTIONAL_IDENTITY_FIELDS = ("start_from",)
#: Identity settings added after runs existed, with the value they implicitly had before:
#: at that value they are left out of a run's identity (:func:`identity_of`), so the run ids
#: of runs recorded without them stay the same and those runs resume.
LATER_IDENTITY_SETTINGS: dict[str, Any] = {"tfmpe.time_power": 3.0}


def identity_fields(method: str) -> tuple[str, ...]:
    """The identity settings of a run of ``method``: :data:`IDENTITY_FIELDS`, and the
    method's own settings where they are among :data:`METHOD_IDENTITY_FIELDS`."""
    own = get_method(method).settings_field
    return IDENTITY_FIELDS + ((own,) if own in METHOD_IDENTITY_FIELDS else ())


def identity_of(settings: dict[str, Any], method: str | None = None) -> dict[str, Any]:
    """The identity settings of dumped settings (``model_dump``, or a run file's): those
    :func:`identity_fields` names for ``method`` (default: the settings' own), without the
    :data:`LATER_IDENTITY_SETTINGS` that are absent or at their former value."""
    identity = {k: settings.get(k) for k in identity_fields(method or settings["method"])}
    for name in OPTIONAL_IDENTITY_FIELDS:  # in a run's identity only when set
        if settings.get(name) is not None:
            identity[name] = settings[name]
    for dotted, former in LATER_IDENTITY_SETTINGS.items():
        section, name = dotted.split(".")
        part = identity.get(section)
        if isinstance(part, dict) and part.get(name, former) == former:
            identity[section] = {k: v for k, v in part.items() if k != name}
    return identity


def _numbers_or_path_schema(schema: dict[str, Any]) -> None:
    """JSON schema of ``xobs``: a list of numbers, or a file path (the validator loads it)."""
    numbers = {k: schema.pop(k) for k in ("type", "items", "minItems") if k in schema}
    path = {"type": "string", "title": "File path", "examples": ["data/xobs.npy"]}
    schema["anyOf"] = [{**numbers, "title": "Numbers"}, path]


def _at_least_two_schema(schema: dict[str, Any]) -> None:
    """JSON schema bounds of ``simulations_per_round`` (its validator asks for >= 2)."""
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "integer":
            branch["minimum"] = 2
        elif branch.get("type") == "array":
            branch["minItems"] = 1
            branch["items"]["minimum"] = 2


class RunConfig(BaseModel):
    """Everything a run needs. Unknown keys are errors; errors name the field.

    Examples:
        >>> config = RunConfig(xobs=[0.5, -0.3], rounds=3, simulations_per_round=1000)
        >>> config.method, config.rounds
        ('snpe', 3)
        >>> RunConfig(xobs=[0.5, -0.3], round=3)
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for Online inference run
        round
          Extra inputs are not permitted ...
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, title="Online inference run"
    )

    xobs: list[float] = Field(
        ...,
        min_length=1,
        title="Observation x_o",
        description="Numbers, or a path to .npy, .csv or file.h5:dataset (relative paths: "
        "from the working directory).",
        examples=[[0.5, -0.3]],
        json_schema_extra=_numbers_or_path_schema,
    )
    method: Literal[tuple(METHODS)] = Field(  # type: ignore[valid-type]
        "snpe",
        title="Method",
        description="snpe: sequential neural posterior estimation (APT); tsnpe: SNPE with a "
        "truncated prior as proposal; snle: neural likelihood + MCMC; snre: neural ratio + "
        "MCMC; tfmpe: flow matching posterior estimation with truncated proposals; tnpse: "
        "score-based (diffusion) posterior estimation with truncated proposals.",
    )
    rounds: int = Field(
        3,
        ge=1,
        le=1000,
        title="Rounds",
        description="A finished run given more rounds is extended.",
    )
    simulations_per_round: int | list[int] = Field(
        1000,
        title="Simulations per round",
        description="One number (>= 2) for every round, or one per round (the last repeats).",
        json_schema_extra=_at_least_two_schema,
    )
    simulator: SimulatorConfig = Field(
        default_factory=SimulatorConfig,
        title="Simulator",
        description="A Python function module:function, batched or per sample, or a program.",
    )
    x_dtype: Literal["auto", "float32", "float64"] = Field(
        "auto",
        title="Stored simulations' type",
        description="auto: as the simulator returns them (float32 stays float32; other "
        "number types are stored as float64). A round keeps the type it was planned with.",
    )
    prior: PriorConfig = Field(
        default_factory=lambda: PriorConfig(low=[-2.0, -2.0], high=[2.0, 2.0]),
        title="Prior",
        description="Box bounds (low, high), or a factory module:function.",
    )
    parameter_names: list[str] | None = Field(
        None, title="Parameter names", description="Labels of the summaries and pairplots."
    )
    start_from: StartConfig | None = Field(
        None,
        title="Start from simulations",
        description="Parameter/simulation pairs you have, taken as round 1 instead of "
        "simulating it (see docs/reuse.md).",
    )
    x_names: list[str] | None = Field(
        None,
        title="Observation names",
        description="Labels of x's entries in the checks and reports (none: x_1 .. x_K); a "
        "campaign takes them from its table's header row.",
    )
    network: NetworkConfig = Field(
        default_factory=NetworkConfig, title="Network", description="sbi's density estimators."
    )
    training: TrainConfig = Field(
        default_factory=TrainConfig,
        title="Training",
        description="Batch size, learning rate, stopping rules, checkpoints, device.",
    )
    stall: StallConfig = Field(
        default_factory=StallConfig,
        title="Stalled trainings",
        description="Detect a round whose network failed to train and retrain it.",
    )
    npe: NPELossConfig = Field(
        default_factory=NPELossConfig, title="SNPE loss", description="method=snpe."
    )
    nre: NRELossConfig = Field(
        default_factory=NRELossConfig, title="SNRE loss", description="method=snre."
    )
    tsnpe: TruncationConfig = Field(
        default_factory=TruncationConfig, title="TSNPE truncation", description="method=tsnpe."
    )
    tfmpe: FlowMatchingConfig = Field(
        default_factory=FlowMatchingConfig,
        title="TFMPE (flow matching)",
        description="method=tfmpe: network depth, training times, ODE/SDE sampling, truncation.",
    )
    tnpse: ScoreMatchingConfig = Field(
        default_factory=ScoreMatchingConfig,
        title="TNPSE (score-based)",
        description="method=tnpse: SDE, network depth, training times, sampling, truncation.",
    )
    posterior: PosteriorConfig = Field(
        default_factory=PosteriorConfig,
        title="Posterior sampling",
        description="Samples stored per round at xobs, and the sampler.",
    )
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig,
        title="Dask cluster",
        description="Where simulations run (local, an existing scheduler, a batch system) and "
        "how they are chunked, retried and timed out.",
    )
    continuation: ContinuationConfig = Field(
        default_factory=ContinuationConfig,
        title="Batch job continuation",
        description="A driver job stopped by its batch time limit continues in a new job.",
    )
    logger: TrackerConfig = Field(
        default_factory=TrackerConfig,
        title="Logging backend",
        description="Where training metrics go: stdout, TensorBoard, MLflow, W&B or none.",
    )
    console: ConsoleConfig = Field(
        default_factory=ConsoleConfig,
        title="Progress reporting",
        description="Progress lines in logs (batch jobs, Prefect workers).",
    )
    diagnostics: DiagnosticsConfig = Field(
        default_factory=DiagnosticsConfig,
        title="Posterior checks",
        description="Per round: posterior summary with MAP, posterior predictive check, change "
        "from the previous round, C2ST against reference samples; calibration of round 1; an "
        "optional early stop once the posterior is stable.",
    )
    run_dir: str = Field(
        "runs",
        min_length=1,
        title="Run directory",
        description="The run file is <run_dir>/<run_id>/run.h5 (relative: from the working "
        "directory).",
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        title="Run id",
        description="The run's name; none: derived from the settings, so the same command "
        "resumes the same run.",
    )
    seed: int = Field(
        0, ge=0, le=2**63 - 1, title="Seed", description="Every random draw derives from it."
    )

    @field_validator("xobs", mode="before")
    @classmethod
    def _load_xobs(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            return load_vector(str(value)).tolist()
        if isinstance(value, (int, float)):
            return [value]
        return value

    @field_validator("xobs")
    @classmethod
    def _finite_xobs(cls, value: list[float]) -> list[float]:
        bad = [i for i, v in enumerate(value) if v != v or v in (float("inf"), float("-inf"))]
        if bad:
            raise ValueError(f"xobs must be finite numbers; entries {bad} are NaN or infinite")
        return value

    @field_validator("simulations_per_round")
    @classmethod
    def _positive_sims(cls, value: int | list[int]) -> int | list[int]:
        values = [value] if isinstance(value, int) else value
        if not values or any(v < 2 for v in values):
            raise ValueError(f"simulations per round must be integers >= 2, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        method = get_method(self.method)
        if self.network.model is not None:
            method.check_network(self.network.model)
        self._check_applicable(method)
        method.sampler(self.posterior)  # raises for a sampler the method cannot use
        if self.prior.low is not None and self.parameter_names is not None:
            if len(self.parameter_names) != len(self.prior.low):
                raise ValueError(
                    f"parameter_names has {len(self.parameter_names)} names but the prior has "
                    f"{len(self.prior.low)} parameters"
                )
        if self.start_from is not None:
            check_start(self.start_from, self.method, method.trains_on_any_proposal)
        if self.x_names is not None and len(self.x_names) != len(self.xobs):
            raise ValueError(
                f"x_names has {len(self.x_names)} names but xobs has {len(self.xobs)} values"
            )
        truth = self.diagnostics.true_parameters
        if self.prior.low is not None and truth is not None and len(truth) != len(self.prior.low):
            raise ValueError(
                f"diagnostics.true_parameters has {len(truth)} values but the prior has "
                f"{len(self.prior.low)} parameters"
            )
        return self

    def _check_applicable(self, method: Method) -> None:
        """Settings changed from their defaults that the method would ignore are errors:
        another method's (:data:`METHOD_IDENTITY_FIELDS`) and the ``network`` settings its
        network does not use (``Method.check_network_settings``)."""
        own = method.settings_field
        for name in METHOD_IDENTITY_FIELDS:
            if name != own and getattr(self, name) != type(self).model_fields[name].get_default(
                call_default_factory=True
            ):
                raise ValueError(
                    f"{name} settings apply only to method={name!r} (method is {self.method!r}); "
                    f"remove them or set method: {name}"
                )
        method.check_network_settings(self.network)

    # --- derived values -------------------------------------------------------------------
    def simulations_for_round(self, round_: int) -> int:
        """Simulations of 1-based round ``round_`` (the last list entry repeats)."""
        sims = self.simulations_per_round
        if isinstance(sims, int):
            return sims
        return sims[min(round_, len(sims)) - 1]

    @property
    def network_model(self) -> str:
        """The network's model name, with the method's default filled in."""
        return self.network.model or get_method(self.method).default_network

    def posterior_samples_for_round(self, round_: int) -> int:
        """Posterior samples round ``round_`` stores: ``posterior.num_samples``, with
        ``auto`` resolved (``sbi_rounds.methods.mcmc.AUTO_DIRECT_SAMPLES`` for direct
        sampling; else the next round's simulations, or this round's in the last round, and
        the predictive check's, at least ``AUTO_MIN_SAMPLES``)."""
        n = self.posterior.num_samples
        if n != "auto":
            return int(n)
        if self.posterior_sampler == "direct":
            return AUTO_DIRECT_SAMPLES
        proposal = self.simulations_for_round(min(round_ + 1, self.rounds))
        return max(proposal, self.diagnostics.predictive_simulations, AUTO_MIN_SAMPLES)

    @property
    def posterior_sampler(self) -> str:
        """The sampler, with ``auto`` resolved for the method."""
        return get_method(self.method).sampler(self.posterior)

    @property
    def map_iterations(self) -> int:
        """MAP gradient steps, with ``auto`` resolved for the method."""
        n = self.diagnostics.map_iterations
        return get_method(self.method).map_iterations if n == "auto" else int(n)

    @property
    def calibration_simulations(self) -> int:
        """Calibration test simulations, with ``auto`` resolved: some hundreds where the
        posterior is sampled directly (cheap), 0 where every test needs MCMC."""
        n = self.diagnostics.calibration_simulations
        if n != "auto":
            return int(n)
        cheap = self.posterior_sampler == "direct" and get_method(self.method).calibrates_by_default
        return AUTO_CALIBRATION_SIMULATIONS if cheap else 0

    @property
    def method_settings(self) -> BaseModel | None:
        """The method's typed settings (``npe``, ``nre``, ``tsnpe``, ``tfmpe``, ``tnpse``;
        None for snle)."""
        field = get_method(self.method).settings_field
        return None if field is None else getattr(self, field)

    def identity(self) -> dict[str, Any]:
        """The settings that define what the run computes (see :func:`identity_of`)."""
        return identity_of(self.model_dump(mode="json"))

    def fingerprint(self) -> str:
        """SHA-256 of :meth:`identity`, as hex."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def resolved_run_id(self) -> str:
        """``run_id``, or ``<method>-<first 10 hex digits of the fingerprint>``."""
        return self.run_id or f"{self.method}-{self.fingerprint()[:10]}"

    @property
    def run_path(self) -> Path:
        """``<run_dir>/<run_id>/run.h5``."""
        return Path(self.run_dir) / self.resolved_run_id / "run.h5"
