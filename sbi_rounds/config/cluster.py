"""Where simulations run: the Dask cluster's settings and a batch system's job settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from sbi_rounds.strict import STRICT

__all__ = ["ClusterConfig", "JobqueueConfig"]


class JobqueueConfig(BaseModel):
    """A dask-jobqueue batch cluster (SLURM, PBS, ...). Unset fields come from jobqueue.yaml."""

    model_config = STRICT

    cores: int | None = Field(None, ge=1, title="Cores per job", description="CPUs per job.")
    memory: str | None = Field(
        None, title="Memory per job", description="Memory per job.", examples=["16GB"]
    )
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
        description="e.g. 02:00:00; workers retire lifetime_margin before it.",
        examples=["02:00:00"],
    )
    queue: str | None = Field(
        None, title="Queue / partition", description="Batch queue (partition) of the worker jobs."
    )
    account: str | None = Field(
        None, title="Account", description="SLURM/PBS -A; passed as project to SGE, LSF and OAR."
    )
    interface: str | None = Field(
        None, title="Network interface", description="e.g. ib0, eth0; default: the default route."
    )
    job_extra_directives: list[str] = Field(
        default_factory=list,
        title="Extra job directives",
        description="More #SBATCH (#PBS, ...) lines of the job script.",
    )
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

    model_config = STRICT

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
    threads_per_worker: int = Field(
        1,
        ge=1,
        le=256,
        title="Threads per worker (local)",
        description="Keep 1 for Python simulators (the GIL); more for ones that release it.",
    )
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
    chunk_seconds: float = Field(
        5.0,
        gt=0,
        title="Longest chunk in seconds (measure)",
        description="Longest chunk with chunk_size=measure, in seconds.",
    )
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
        "file together (a stop or an error commits them at once); 0 commits each chunk in "
        "a write of its own as soon as it is seen finished (one commit per chunk). A SIGKILL "
        "loses at most the chunks in flight and those finished in "
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
    check_timeout: float = Field(
        300.0,
        gt=0,
        title="Seconds for the start-up check",
        description="A new run first simulates 2 prior draws in this process, before "
        "Prefect and Dask start; a simulator that has not returned by then stops the run "
        "with an error. chunk_timeout, when set, is used instead.",
    )
    min_valid_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        title="Minimum valid fraction per round",
        description="Stop when fewer simulations of a round are finite.",
    )

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, address: str | None) -> str | None:
        """``[protocol://]host:port``, as distributed connects to (checked before a run
        file is written)."""
        if address is None:
            return None
        host, colon, port = address.split("://", 1)[-1].rpartition(":")
        if not (colon and host and port.isdigit()):
            raise ValueError(
                f"{address!r} is not a Dask scheduler address; give it as tcp://HOST:PORT "
                "(dask scheduler --port 8786 prints it)"
            )
        return address

    @model_validator(mode="after")
    def _kind_fields(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind='address' needs address='tcp://host:8786'")
        if self.kind == "scheduler_file" and not self.scheduler_file:
            raise ValueError("kind='scheduler_file' needs scheduler_file='/path/scheduler.json'")
        return self
