"""The run configuration: one typed, validated model for the CLI, config files and Prefect."""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sbi_rounds.io import load_vector
from sbi_rounds.training.config import TrackerConfig, TrainConfig

__all__ = [
    "IDENTITY_FIELDS",
    "METHODS",
    "ClusterConfig",
    "DiagnosticsConfig",
    "JobqueueConfig",
    "NetworkConfig",
    "NPELossConfig",
    "NRELossConfig",
    "PosteriorConfig",
    "PriorConfig",
    "RunConfig",
    "SimulatorConfig",
    "StallConfig",
    "TruncationConfig",
    "config_differences",
    "format_validation_error",
    "load_config_file",
]

METHODS = ("snpe", "tsnpe", "snle", "snre")
DENSITY_MODELS = (
    "maf",
    "nsf",
    "mdn",
    "made",
    "zuko_maf",
    "zuko_nsf",
    "zuko_nice",
    "zuko_naf",
    "zuko_unaf",
    "zuko_gf",
    "zuko_bpf",
    "zuko_sospf",
)
CLASSIFIER_MODELS = ("mlp", "resnet", "linear")
#: The network each method builds when ``network.model`` is not set. NSF for the posterior
#: estimators: on sbibm's two_moons at 10 x 100 simulations, SNPE's C2ST went from 0.81
#: (MAF) to 0.60 (NSF), TSNPE's from 0.73 to 0.65 (observation 1; benchmarks/README.md).
DEFAULT_NETWORKS = {"snpe": "nsf", "tsnpe": "nsf", "snle": "maf", "snre": "resnet"}

#: Settings that define what a run computes. Resuming with any of them changed is refused.
IDENTITY_FIELDS = ("xobs", "simulator", "prior", "method", "network", "seed", "npe", "nre", "tsnpe")

_STRICT = ConfigDict(extra="forbid", frozen=True, validate_default=True)
ImportPath = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", examples=["mypackage.sims:simulate"]),
]


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


class PriorConfig(BaseModel):
    """The prior: box bounds (an independent uniform per parameter) or an import path.

    Give either ``low`` and ``high`` (one value per parameter) or ``path``, a
    ``module:function`` that returns a ``torch.distributions.Distribution`` over ``(D,)``.
    """

    model_config = _STRICT

    low: list[float] | None = Field(None, title="Lower bounds", description="One per parameter.")
    high: list[float] | None = Field(None, title="Upper bounds", description="One per parameter.")
    path: ImportPath | None = Field(None, title="Prior factory", description="module:function")

    @model_validator(mode="after")
    def _one_kind(self) -> PriorConfig:
        box = self.low is not None or self.high is not None
        if box and self.path is not None:
            raise ValueError("give either low/high box bounds or path, not both")
        if not box and self.path is None:
            raise ValueError("give low and high box bounds, or path='module:function'")
        if box:
            if self.low is None or self.high is None:
                raise ValueError("box prior needs both low and high")
            if len(self.low) != len(self.high) or not self.low:
                raise ValueError(
                    f"low and high need one value per parameter and the same length, got "
                    f"{len(self.low)} and {len(self.high)}"
                )
            bad = [
                i for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)) if not hi > lo
            ]
            if bad:
                raise ValueError(
                    "prior width must be positive: high must exceed low for parameter(s) "
                    + ", ".join(f"{i} (low={self.low[i]}, high={self.high[i]})" for i in bad)
                )
        return self


class SimulatorConfig(BaseModel):
    """The simulator and how it is called.

    ``batched``: ``f(theta (N, D)) -> x (N, K)``, numpy or torch. ``per_sample``:
    ``f(theta (D,)) -> x (K,)``, batched for you. ``command``: an external program, see
    ``sbi_rounds.simulation`` for its file protocol.
    """

    model_config = _STRICT

    path: ImportPath | None = Field(
        "sbi_rounds.examples:linear_gaussian", title="Simulator", description="module:function"
    )
    kind: Literal["batched", "per_sample", "command"] = Field("batched", title="Kind")
    command: list[str] | None = Field(
        None, title="Command", description="Program and arguments (kind=command)."
    )
    kwargs: dict[str, float | int | str | bool] = Field(
        default_factory=dict, title="Keyword arguments", description="Passed to the simulator."
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> SimulatorConfig:
        if self.kind == "command":
            if not self.command:
                raise ValueError("kind='command' needs command=['program', 'arg', ...]")
        elif self.path is None:
            raise ValueError(f"kind={self.kind!r} needs path='module:function'")
        return self


class NetworkConfig(BaseModel):
    """The neural network, built through sbi's builders.

    ``model`` None picks the method's default: ``nsf`` for SNPE/TSNPE, ``maf`` for SNLE,
    ``resnet`` for SNRE. Density models: maf, nsf, mdn, made and the zuko flows (``zuko_maf``, ...);
    classifiers (SNRE): mlp, resnet, linear.
    """

    model_config = _STRICT

    model: Literal[DENSITY_MODELS + CLASSIFIER_MODELS] | None = Field(  # type: ignore[valid-type]
        None, title="Network"
    )
    hidden_features: int = Field(50, ge=1, le=4096, title="Hidden features")
    num_transforms: int = Field(5, ge=1, le=64, title="Transforms")
    num_bins: int = Field(10, ge=1, le=256, title="Spline bins")
    num_components: int = Field(10, ge=1, le=256, title="Mixture components (mdn)")
    z_score_theta: Literal["independent", "structured", "none"] = Field(
        "independent", title="z-score theta"
    )
    z_score_x: Literal["independent", "structured", "none"] = Field(
        "independent", title="z-score x"
    )
    embedding_net: ImportPath | None = Field(
        None, title="Embedding network", description="module:function returning a torch module."
    )


class NPELossConfig(BaseModel):
    """SNPE's atomic (APT) loss settings."""

    model_config = _STRICT

    num_atoms: int = Field(10, ge=2, title="Atoms")
    use_combined_loss: bool = Field(False, title="Add the MLE loss on prior samples")


class NRELossConfig(BaseModel):
    """SNRE's loss: NRE-B (contrastive, ``num_atoms``) or NRE-C (``num_classes``, ``gamma``)."""

    model_config = _STRICT

    variant: Literal["b", "c"] = Field("b", title="NRE variant")
    num_atoms: int = Field(10, ge=2, title="Atoms (NRE-B)")
    num_classes: int = Field(5, ge=1, title="Classes K (NRE-C)")
    gamma: float = Field(1.0, gt=0, title="Gamma (NRE-C)")


class TruncationConfig(BaseModel):
    """TSNPE: the prior truncated to the posterior's highest-density region."""

    model_config = _STRICT

    quantile: float = Field(
        1e-4,
        gt=0,
        lt=1,
        title="Truncation quantile",
        description="Mass of the posterior left outside the truncated region.",
    )
    num_samples_to_estimate: int = Field(10_000, ge=100, title="Samples to set the threshold")


class StallConfig(BaseModel):
    """Catching a network that failed to train, and training it again.

    After each round's training, the network's per-sample validation losses are compared
    with a reference on the same rows (see ``sbi_rounds.stall``): in round 1 the best
    linear-Gaussian conditional density (or, for SNRE, a classifier at chance level), later
    the previous round's network. A training whose mean excess loss is above ``margin`` nats
    per modelled dimension and ``significance`` standard errors has stalled: the round is
    trained again from fresh weights with a new seed, before it proposes anything, and the
    run file and the round table record it.
    """

    model_config = _STRICT

    max_retrains: int = Field(
        2,
        ge=0,
        le=10,
        title="Retrains of a stalled training",
        description="At most this many new trainings of a round whose training stalled (the "
        "best of all is kept, with a warning, when every one stalls); 0: never retrain.",
    )
    margin: float = Field(
        0.5,
        gt=0,
        title="Excess loss of a stalled training (nats per dimension)",
        description="Mean validation loss above the reference's, per sample and per dimension "
        "of what the network models (theta for snpe/tsnpe, x for snle, 1 for snre), beyond "
        "which a training counts as stalled.",
    )
    significance: float = Field(
        3.0,
        ge=0,
        title="Significance of the excess (standard errors)",
        description="The excess must also exceed this many standard errors of the paired "
        "per-sample differences (small validation sets are noisy).",
    )


class PosteriorConfig(BaseModel):
    """How the posterior at xobs is sampled (stored per round, proposal of the next)."""

    model_config = _STRICT

    num_samples: int = Field(1000, ge=10, le=10_000_000, title="Posterior samples per round")
    sampler: Literal["auto", "direct", "mcmc", "rejection", "importance"] = Field(
        "auto", title="Sampler", description="auto: direct for SNPE/TSNPE, mcmc for SNLE/SNRE."
    )
    mcmc_method: Literal["slice_np_vectorized", "slice_np"] = Field(
        "slice_np_vectorized", title="MCMC method"
    )
    num_chains: int = Field(20, ge=1, le=10_000, title="MCMC chains")
    thin: int = Field(1, ge=1, title="Thinning")
    warmup_steps: int = Field(50, ge=0, title="Warm-up steps")
    init_strategy: Literal["resample", "sir", "proposal"] = Field(
        "resample", title="Chain initialisation"
    )
    batches: int = Field(2, ge=1, le=1000, title="Commit samples in this many batches")
    mcmc_workers: int = Field(
        1,
        ge=1,
        le=1024,
        title="MCMC processes",
        description="1: all chains advance together, vectorized, in the run's process (its "
        "torch threads use the cores); more: chains are split across this many processes.",
    )


class JobqueueConfig(BaseModel):
    """A dask-jobqueue batch cluster (SLURM, PBS, ...). Unset fields come from jobqueue.yaml."""

    model_config = _STRICT

    cores: int | None = Field(None, ge=1, title="Cores per job")
    memory: str | None = Field(None, title="Memory per job", examples=["16GB"])
    processes: int | None = Field(
        None,
        ge=1,
        title="Worker processes per job",
        description="= cores for Python simulators (the GIL); 1 for ones that release it.",
    )
    walltime: str | None = Field(
        None,
        pattern=r"^(\d+-)?\d{1,2}:\d{2}(:\d{2})?$",
        title="Walltime per job",
        examples=["02:00:00"],
    )
    queue: str | None = Field(None, title="Queue / partition")
    account: str | None = Field(
        None, title="Account", description="SLURM/PBS -A; passed as project to SGE, LSF and OAR."
    )
    interface: str | None = Field(
        None, title="Network interface", description="e.g. ib0, eth0; default: the default route."
    )
    job_extra_directives: list[str] = Field(default_factory=list, title="Extra job directives")
    job_script_prologue: list[str] = Field(
        default_factory=list,
        title="Job script prologue",
        description="Shell lines run before the worker starts (modules, environments).",
    )
    jobs: int | None = Field(None, ge=1, title="Jobs", description="scale(jobs=N)")
    minimum_jobs: int | None = Field(
        None, ge=0, title="Minimum jobs (adaptive)", description="adapt(minimum_jobs=...)"
    )
    maximum_jobs: int | None = Field(
        None, ge=1, title="Maximum jobs (adaptive)", description="adapt(maximum_jobs=...)"
    )
    lifetime_margin: str = Field(
        "5m",
        title="Worker lifetime margin",
        description="Workers retire this long before the job's walltime.",
    )

    @model_validator(mode="after")
    def _scaling(self) -> JobqueueConfig:
        adaptive = self.minimum_jobs is not None or self.maximum_jobs is not None
        if adaptive and self.jobs is not None:
            raise ValueError(
                "give one: jobs=N, or minimum_jobs=A and maximum_jobs=B (fixed or adaptive "
                "batch jobs)"
            )
        if self.minimum_jobs is not None and self.maximum_jobs is None:
            raise ValueError(
                "minimum_jobs needs maximum_jobs too (adaptive scaling between the two)"
            )
        if self.maximum_jobs is not None and self.maximum_jobs < (self.minimum_jobs or 0):
            raise ValueError(
                f"maximum_jobs={self.maximum_jobs} is below minimum_jobs={self.minimum_jobs}"
            )
        return self

    @field_validator("lifetime_margin")
    @classmethod
    def _duration(cls, value: str) -> str:
        from dask.utils import parse_timedelta

        try:
            parse_timedelta(value)
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"lifetime_margin must be a duration like '5m' or '300s', got {value!r}"
            ) from None
        return value


class ClusterConfig(BaseModel):
    """Where simulations run, and how they are sent.

    Grouped as: where (``kind`` and the local cluster's ``workers``, ``threads_per_worker``
    and ``dashboard``, an existing scheduler's ``address`` or ``scheduler_file``, a batch
    system's ``jobqueue``), then how (chunking, retries, timeouts, the valid fraction).
    """

    model_config = _STRICT

    kind: Literal[
        "local",
        "address",
        "scheduler_file",
        "slurm",
        "pbs",
        "sge",
        "lsf",
        "htcondor",
        "oar",
        "moab",
    ] = Field(
        "local",
        title="Cluster",
        description="local: Dask processes on this machine; address / scheduler_file: an "
        "existing scheduler; slurm, pbs, sge, lsf, htcondor, oar, moab: batch jobs "
        "(dask-jobqueue, see jobqueue).",
    )
    workers: int = Field(
        2, ge=1, le=4096, title="Workers (local)", description="Worker processes (local)."
    )
    threads_per_worker: int = Field(1, ge=1, le=256, title="Threads per worker (local)")
    dashboard: bool = Field(
        False,
        title="Start the Dask dashboard (local)",
        description="Its link is logged and published as a link artifact; needs bokeh.",
    )
    address: str | None = Field(
        None,
        title="Scheduler address",
        description="kind=address: the scheduler to connect to.",
        examples=["tcp://host:8786"],
    )
    scheduler_file: str | None = Field(
        None, title="Scheduler file", description="kind=scheduler_file: its JSON file."
    )
    jobqueue: JobqueueConfig = Field(
        default_factory=JobqueueConfig,
        title="Batch system",
        description="Job settings for kind=slurm, pbs, ...; unset ones come from jobqueue.yaml.",
    )
    chunk_size: Annotated[int, Field(ge=1)] | Literal["auto", "measure"] = Field(
        "auto",
        title="Chunk size",
        description="Simulations per task: a number; auto (N/64, at most 1000: the same "
        "chunks, hence the same simulations, for any number of workers); or measure (like "
        "auto, but chunks of at most chunk_seconds at the speed timed on a probe; stored with "
        "the round, so a resume reuses it).",
    )
    chunk_seconds: float = Field(5.0, gt=0, title="Longest chunk in seconds (measure)")
    max_in_flight: int | None = Field(
        None,
        ge=1,
        title="Chunks in flight",
        description="Default: 2 per worker thread (counting the threads the cluster asks for).",
    )
    commit_interval: float = Field(
        0.5,
        ge=0,
        le=60,
        title="Seconds between chunk commits",
        description="Chunks that finish within this many seconds are committed to the run "
        "file together (a stop or an error commits them at once); 0 commits each chunk as "
        "it finishes. A SIGKILL loses at most the chunks in flight and those finished in "
        "the last interval; committing costs at most one write per interval.",
    )
    retries: int = Field(
        2,
        ge=0,
        le=100,
        title="Retries of a failing chunk",
        description="Then its parameters and traceback are saved and the run stops.",
    )
    chunk_timeout: float | None = Field(
        None,
        gt=0,
        title="Seconds before a chunk counts as hung",
        description="Seconds a chunk may run on a worker; then it is cut, its worker "
        "restarted, and it is retried (external programs are killed).",
    )
    min_valid_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        title="Minimum valid fraction per round",
        description="Stop when fewer simulations of a round are finite.",
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind='address' needs address='tcp://host:8786'")
        if self.kind == "scheduler_file" and not self.scheduler_file:
            raise ValueError("kind='scheduler_file' needs scheduler_file='/path/scheduler.json'")
        return self


class DiagnosticsConfig(BaseModel):
    """Posterior checks after every round, calibration, and the rule that may end a run early.

    None of these settings changes what a run computes (they are not identity settings):
    they can change between sessions, and a round's checks that were never computed (e.g.
    a reference added later) are filled in when the run is resumed.
    """

    model_config = _STRICT

    predictive_simulations: int = Field(
        100,
        ge=0,
        le=10_000_000,
        title="Posterior predictive simulations",
        description="Per round, simulate this many of the round's posterior samples at x_o "
        "(on Dask, like the round's own simulations) and compare each summary statistic with "
        "x_o; at most posterior.num_samples; 0: no predictive check.",
    )
    predictive_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        title="Predictive check level",
        description="A summary statistic is flagged when x_o lies outside the central "
        "1 - alpha interval of its posterior predictive distribution (two-sided predictive "
        "p-value 2 min(q, 1 - q) < alpha, q the predictive quantile of x_o).",
    )
    map_iterations: int = Field(
        200,
        ge=0,
        le=100_000,
        title="MAP gradient steps",
        description="Gradient-ascent steps of sbi's posterior.map(), started from the best of "
        "the round's stored posterior samples; 0: no MAP estimate.",
    )
    calibration_simulations: int = Field(
        0,
        ge=0,
        le=1_000_000,
        title="Calibration test simulations",
        description="Prior draws simulated (on Dask) to check round 1's amortized estimator: "
        "simulation-based calibration ranks and expected coverage (sbi.diagnostics). Some "
        "hundreds give a meaningful check; 0: no calibration.",
    )
    calibration_posterior_samples: int = Field(
        1000,
        ge=10,
        le=1_000_000,
        title="Posterior samples per calibration test",
        description="Posterior samples drawn per test simulation to rank its parameters.",
    )
    reference: str | None = Field(
        None,
        title="Reference posterior samples",
        description="A file of reference posterior samples at x_o, shape (S, D): .npy, .csv or "
        "file.h5:dataset. Each round's posterior is compared with them by C2ST, as sbibm "
        "defines it (0.5: indistinguishable, 1: disjoint).",
        examples=["reference_posterior.npy"],
    )
    true_parameters: list[float] | None = Field(
        None,
        title="True parameters",
        description="The parameters x_o was simulated from, when known: marked in the "
        "pairplots and reported next to the posterior summary.",
    )
    stop_when_stable: bool = Field(
        False,
        title="Stop when the posterior is stable",
        description="End the run before its last round once stable_rounds successive rounds "
        "moved every posterior mean by less than stable_mean_shift standard deviations and "
        "changed every posterior width by less than stable_width_change (relative).",
    )
    stable_mean_shift: float = Field(
        0.1,
        gt=0,
        title="Largest mean shift of a stable round (in sd)",
        description="|mean_r - mean_(r-1)| / sd_(r-1) of every parameter must stay below it. "
        "Keep it above the Monte Carlo noise, about 3 * sqrt(2 / posterior.num_samples).",
    )
    stable_width_change: float = Field(
        0.1,
        gt=0,
        title="Largest width change of a stable round",
        description="|sd_r / sd_(r-1) - 1| of every parameter must stay below it.",
    )
    stable_rounds: int = Field(
        2,
        ge=1,
        le=1000,
        title="Stable rounds in a row before stopping",
        description="How many successive rounds must be stable before the run stops.",
    )

    @field_validator("true_parameters")
    @classmethod
    def _finite_truth(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or not all(math.isfinite(v) for v in value)):
            raise ValueError(
                f"true_parameters must be one finite number per parameter, got {value}"
            )
        return value


class RunConfig(BaseModel):
    """Everything a run needs. Unknown keys are errors; errors name the field.

    Example:
        ``RunConfig(xobs=[0.5, -0.3], rounds=3, simulations_per_round=1000)``
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
    method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        "snpe",
        title="Method",
        description="snpe: sequential neural posterior estimation (APT); tsnpe: SNPE with a "
        "truncated prior as proposal; snle: neural likelihood + MCMC; snre: neural ratio + "
        "MCMC.",
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
    prior: PriorConfig = Field(
        default_factory=lambda: PriorConfig(low=[-2.0, -2.0], high=[2.0, 2.0]),
        title="Prior",
        description="Box bounds (low, high), or a factory module:function.",
    )
    parameter_names: list[str] | None = Field(
        None, title="Parameter names", description="Labels of the summaries and pairplots."
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
        default_factory=NPELossConfig, title="SNPE loss", description="method=snpe, tsnpe."
    )
    nre: NRELossConfig = Field(
        default_factory=NRELossConfig, title="SNRE loss", description="method=snre."
    )
    tsnpe: TruncationConfig = Field(
        default_factory=TruncationConfig, title="TSNPE truncation", description="method=tsnpe."
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
    logger: TrackerConfig = Field(
        default_factory=TrackerConfig,
        title="Logging backend",
        description="Where training metrics go: stdout, TensorBoard, MLflow, W&B or none.",
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
        description="Default: derived from the settings, so the same command resumes.",
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
        model = self.network.model
        if model is not None:
            if self.method == "snre" and model not in CLASSIFIER_MODELS:
                raise ValueError(
                    f"network.model={model!r} is a density estimator; snre needs a classifier: "
                    f"one of {list(CLASSIFIER_MODELS)}"
                )
            if self.method != "snre" and model not in DENSITY_MODELS:
                raise ValueError(
                    f"network.model={model!r} is a classifier; {self.method} needs a density "
                    f"estimator: one of {list(DENSITY_MODELS)}"
                )
        if self.prior.low is not None and self.parameter_names is not None:
            if len(self.parameter_names) != len(self.prior.low):
                raise ValueError(
                    f"parameter_names has {len(self.parameter_names)} names but the prior has "
                    f"{len(self.prior.low)} parameters"
                )
        truth = self.diagnostics.true_parameters
        if self.prior.low is not None and truth is not None and len(truth) != len(self.prior.low):
            raise ValueError(
                f"diagnostics.true_parameters has {len(truth)} values but the prior has "
                f"{len(self.prior.low)} parameters"
            )
        if self.method == "tsnpe" and model == "mdn":
            pass  # supported: truncation only needs log_prob and sampling
        return self

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
        if self.network.model is not None:
            return self.network.model
        return DEFAULT_NETWORKS[self.method]

    @property
    def posterior_sampler(self) -> str:
        """The sampler, with ``auto`` resolved for the method."""
        if self.posterior.sampler != "auto":
            return self.posterior.sampler
        return "direct" if self.method in ("snpe", "tsnpe") else "mcmc"

    def identity(self) -> dict[str, Any]:
        """The settings that define what the run computes (see :data:`IDENTITY_FIELDS`)."""
        dumped = self.model_dump(mode="json")
        return {k: dumped[k] for k in IDENTITY_FIELDS}

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


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like dicts differ, as ``path: old -> new`` lines."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_differences(a, b, prefix=f"{path}.")
        elif a != b:
            lines.append(f"{path}: {a!r} -> {b!r}")
    return lines


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    elif p.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {str(p)!r} is not valid TOML: {e}") from None
    else:
        raise ValueError(f"config file {str(p)!r} must end in .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping of settings at the top")
    return data


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: the field's dotted path, what is wrong, and the input."""
    lines = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-")) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; see --help for the settings)"
        given = e.get("input")
        shown = "" if isinstance(given, dict) or e["type"] == "missing" else f" (got {given!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)
