"""Dask clusters: walltimes and lifetimes, dask-jobqueue settings and job scripts, local cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import dask
import psutil
import pytest

from sbi_rounds.cluster import (
    expected_threads,
    job_script,
    jobqueue_kwargs,
    lifetime_args,
    main,
    open_client,
    walltime_seconds,
)
from sbi_rounds.config import (
    CampaignConfig,
    ClusterConfig,
    JobqueueConfig,
    RunConfig,
    load_config_file,
)

pytest.importorskip("dask_jobqueue", reason="the hpc extra: pip install 'sbi-rounds[hpc]'")

HPC = Path(__file__).parents[1] / "deployments" / "hpc"


def _slurm(**jobqueue) -> ClusterConfig:
    return ClusterConfig(kind="slurm", jobqueue=JobqueueConfig(**jobqueue))


@pytest.mark.parametrize(
    ("walltime", "kind", "seconds"),
    [
        ("01:30:00", "slurm", 5400),
        ("01:30:00", "pbs", 5400),
        ("30:00", "slurm", 1800),
        ("30:00", "pbs", 1800),
        ("1:30", "lsf", 5400),
        ("2:00", "oar", 7200),
        ("90", "slurm", 5400),
        ("90", "pbs", 90),
        ("2-12", "slurm", 216000),
        ("1-00:30", "slurm", 88200),
        ("1-00:00:10", "slurm", 86410),
    ],
)
def test_walltimes_are_read_the_way_each_batch_system_reads_them(walltime, kind, seconds):
    assert walltime_seconds(walltime, kind) == seconds


def test_bad_walltimes_say_which_form_to_use():
    with pytest.raises(ValueError, match=r"not a time like '01:30:00'"):
        walltime_seconds("2 hours", "slurm")
    with pytest.raises(ValueError, match="D-HH form is SLURM's"):
        walltime_seconds("1-00:00:00", "pbs")


def test_workers_retire_the_margin_before_the_walltime():
    assert lifetime_args(3600, 300) == ["--lifetime", "3240s", "--lifetime-stagger", "60s"]
    # A 10-minute job: stagger 5% (30 s); retirement between 4 and 5 minutes before the end.
    assert lifetime_args(600, 240) == ["--lifetime", "330s", "--lifetime-stagger", "30s"]
    with pytest.raises(ValueError, match="raise cluster.jobqueue.walltime or lower"):
        lifetime_args(300, 300)


def test_settings_resolve_argument_then_jobqueue_yaml_then_default():
    user_file = {
        "jobqueue.slurm.queue": "from-yaml",
        "jobqueue.slurm.account": "acct-yaml",
        "jobqueue.slurm.walltime": "01:00:00",
        "jobqueue.slurm.cores": 4,
    }
    with dask.config.set(user_file):
        from_yaml = jobqueue_kwargs(_slurm(memory="2GB"))
        explicit = jobqueue_kwargs(_slurm(memory="2GB", queue="debug", walltime="00:20:00"))
    # Unset fields are left to dask-jobqueue, which reads the file; the walltime still
    # sets the lifetime.
    assert "queue" not in from_yaml and "cores" not in from_yaml
    assert from_yaml["worker_extra_args"] == ["--lifetime", "3240s", "--lifetime-stagger", "60s"]
    assert explicit["queue"] == "debug" and explicit["walltime"] == "00:20:00"
    assert explicit["worker_extra_args"] == ["--lifetime", "840s", "--lifetime-stagger", "60s"]
    assert from_yaml["scheduler_options"]["dashboard"] is False


def test_a_lifetime_in_the_user_s_worker_args_is_respected():
    with dask.config.set({"jobqueue.slurm.worker-extra-args": ["--lifetime", "1h"]}):
        kwargs = jobqueue_kwargs(_slurm(walltime="02:00:00", memory="1GB", cores=1))
    assert "worker_extra_args" not in kwargs


def test_account_is_project_where_the_batch_system_calls_it_so():
    sge = ClusterConfig(kind="sge", jobqueue=JobqueueConfig(account="p1", cores=1, memory="1GB"))
    assert jobqueue_kwargs(sge)["project"] == "p1"
    pbs = ClusterConfig(kind="pbs", jobqueue=JobqueueConfig(account="a1", cores=1, memory="1GB"))
    assert jobqueue_kwargs(pbs)["account"] == "a1"


@pytest.mark.parametrize(
    ("jobqueue", "message"),
    [
        ({"jobs": 2, "maximum_jobs": 4}, "give one: jobs=N, or minimum_jobs=A and maximum_jobs=B"),
        ({"minimum_jobs": 2}, "minimum_jobs needs maximum_jobs too"),
        ({"minimum_jobs": 5, "maximum_jobs": 2}, "maximum_jobs=2 is below minimum_jobs=5"),
    ],
)
def test_inconsistent_scaling_is_refused(jobqueue, message):
    with pytest.raises(ValueError, match=message):
        jobqueue_kwargs(_slurm(**jobqueue))


def test_a_setting_the_batch_system_lacks_is_named():
    condor = ClusterConfig(
        kind="htcondor", jobqueue=JobqueueConfig(queue="q", cores=1, memory="1GB")
    )
    with pytest.raises(ValueError, match=r"sets queue, which HTCondorCluster .* does not have"):
        jobqueue_kwargs(condor)


def test_expected_threads():
    assert expected_threads(ClusterConfig(workers=3, threads_per_worker=2)) == 6
    assert expected_threads(_slurm(cores=4, jobs=3)) == 12
    assert expected_threads(_slurm(cores=2, minimum_jobs=1, maximum_jobs=5)) == 10
    assert expected_threads(ClusterConfig(kind="address", address="tcp://h:1")) == 0


def test_slurm_job_script():
    script = job_script(
        _slurm(
            cores=2,
            processes=2,
            memory="2GB",
            walltime="00:30:00",
            queue="debug",
            account="proj",
            interface="lo",
            job_extra_directives=["--output=/tmp/w-%j.out"],
            job_script_prologue=["source /opt/env/bin/activate"],
        )
    )
    lines = script.splitlines()
    for line in (
        "#SBATCH -p debug",
        "#SBATCH -A proj",
        "#SBATCH -t 00:30:00",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --output=/tmp/w-%j.out",
        "source /opt/env/bin/activate",
    ):
        assert line in lines, script
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.startswith(sys.executable)
    for option in (
        "--nworkers 2",
        "--nthreads 1",
        "--nanny",
        "--interface lo",
        "--lifetime 1440s",
        "--lifetime-stagger 60s",
    ):
        assert option in worker, worker
    assert lines.index("source /opt/env/bin/activate") < lines.index(worker)


def test_pbs_job_script_needs_no_pbs_server():
    script = job_script(
        ClusterConfig(
            kind="pbs",
            jobqueue=JobqueueConfig(
                cores=4,
                processes=1,
                memory="8GB",
                walltime="04:00:00",
                queue="workq",
                account="acc",
                interface="lo",
            ),
        )
    )
    lines = script.splitlines()
    for line in (
        "#PBS -q workq",
        "#PBS -A acc",
        "#PBS -l select=1:ncpus=4:mem=7630MB",
        "#PBS -l walltime=04:00:00",
    ):
        assert line in lines, script
    assert "--nthreads 4" in script and "--lifetime 14040s" in script


def test_the_shipped_hpc_config_validates_and_gives_a_job_script(capsys):
    config = RunConfig.model_validate(load_config_file(HPC / "run-slurm.yaml"))
    assert config.cluster.kind == "slurm" and config.cluster.jobqueue.jobs == 4
    assert main([str(HPC / "run-slurm.yaml")]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH -p compute" in script and "--lifetime 6840s" in script
    assert "module load python/3.11" in script
    text = (HPC / "sbi-rounds.sbatch").read_text()
    assert "python -m flows.online --config" in text and "#SBATCH --signal=B:USR1@120" in text
    assert "#SBATCH --requeue" in text and "#SBATCH --open-mode=append" in text
    subprocess.run(["bash", "-n", str(HPC / "sbi-rounds.sbatch")], check=True)
    text = (HPC / "campaign.sbatch").read_text()
    assert "campaign --config" in text and "#SBATCH --signal=B:USR1@120" in text
    subprocess.run(["bash", "-n", str(HPC / "campaign.sbatch")], check=True)
    shared = load_config_file(HPC / "campaign-slurm.yaml")
    campaign = CampaignConfig.model_validate(shared.pop("campaign"))
    assert campaign.max_concurrent == 4
    RunConfig.model_validate({**shared, "xobs": [0.0, 0.0]})  # the shared settings are valid
    jobqueue_file = load_config_file(HPC / "jobqueue.yaml")
    assert set(jobqueue_file["jobqueue"]) == {"slurm", "pbs"}


def test_the_scheduler_file_is_removed_also_when_a_run_was_killed():
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    tmp = Path(tempfile.gettempdir())
    # what a run whose scheduler was SIGKILLed leaves behind
    stale = tmp / f"sbi-rounds-scheduler-{dead.stdout.strip()}-0badf00d.json"
    stale.write_text("{}")
    before = set(tmp.glob(f"sbi-rounds-scheduler-{os.getpid()}-*.json"))  # other clusters'
    with open_client(ClusterConfig(workers=1)) as client:
        assert not stale.exists()
        mine = list(set(tmp.glob(f"sbi-rounds-scheduler-{os.getpid()}-*.json")) - before)
        assert len(mine) == 1 and client.scheduler.address in mine[0].read_text()
    assert not mine[0].exists()


def test_local_cluster_processes_exit_when_the_run_is_killed(tmp_path):
    code = (
        "import time\n"
        "from sbi_rounds.cluster import open_client\n"
        "from sbi_rounds.config import ClusterConfig\n"
        "with open_client(ClusterConfig(workers=2)) as client:\n"
        "    def grandchild():\n"
        "        import multiprocessing as mp\n"
        "        p = mp.Process(target=time.sleep, args=(0.1,))\n"
        "        p.start(); p.join(); return p.exitcode\n"
        "    assert client.submit(grandchild).result() == 0  # workers are not daemonic\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    children: list[psutil.Process] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5  # scheduler, 2 nannies, 2 workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        for p in [psutil.Process(proc.pid), *children] if proc.poll() is None else children:
            if p.is_running():
                p.kill()


def test_a_removed_worker_the_cluster_never_listed_does_not_fail_its_close():
    # After a hung worker's restart the scheduler may report the removal of an address the
    # cluster's view never held (dask/distributed#5407); distributed's handler raised
    # KeyError, which failed the close of a run whose work was all done.
    with open_client(ClusterConfig(workers=1)) as client:
        cluster = client.cluster
        cluster._update_worker_status("remove", "tcp://127.0.0.1:1")
        assert len(client.nthreads()) == 1
    assert cluster.status.name == "closed"
