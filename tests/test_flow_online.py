"""The ``online_inference`` flow on a real Prefect server, and the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli.run import build_config, main, parse_args
from flows.online import online_inference
from sbi_rounds.store import RunStore, Stage


def test_the_flow_runs_resumes_and_extends(make_config, prefect_server):
    config = make_config(rounds=2, cluster={"workers": 1, "chunk_size": 100})
    result = online_inference(config)
    assert [row["stage"] for row in result["rounds"]] == ["done", "done"]
    assert len(result["pairplots"]) == 2
    store = RunStore.open(config.run_path)
    assert store.counts(2).valid == 300
    # The same settings again: nothing is redone (no cluster is even started).
    again = online_inference(config)
    assert again["rounds"] == result["rounds"]
    assert all(row["commit_s"] > 0 for row in again["rounds"])
    # More rounds extend the finished run.
    extended = online_inference(make_config(rounds=3, cluster={"workers": 1, "chunk_size": 100}))
    assert [row["round"] for row in extended["rounds"]] == [1, 2, 3]
    assert store.stage(3) == Stage.DONE
    assert store.round_info(3).proposal["round"] == 2


def test_cli_builds_the_config_from_flags_and_files(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "xobs: [1, 2]\nrounds: 4\ntraining: {max_epochs: 9}\ncluster: {workers: 3}\n"
    )
    args = parse_args(
        [
            "--config",
            str(tmp_path / "c.yaml"),
            "--rounds",
            "2",
            "--workers",
            "1",
            "--simulations-per-round",
            "100",
            "200",
            "--low",
            "-1",
            "-1",
            "--high",
            "1",
            "1",
            "--method",
            "snle",
            "--logger",
            "mlflow",
            "--logger-uri",
            "./mlruns",
            "--device",
            "cpu",
        ]
    )
    config = build_config(args)
    assert config.rounds == 2 and config.training.max_epochs == 9
    assert config.cluster.workers == 1 and config.simulations_per_round == [100, 200]
    assert config.prior.low == [-1.0, -1.0] and config.method == "snle"
    assert config.logger.backend == "mlflow" and config.logger.uri == "./mlruns"
    config = build_config(
        parse_args(
            [
                "--xobs",
                "1",
                "--prior",
                "simulators:gaussian_prior_2d",
                "--dask-address",
                "tcp://127.0.0.1:8786",
            ]
        )
    )
    assert config.prior.path == "simulators:gaussian_prior_2d" and config.prior.low is None
    assert config.cluster.kind == "address"
    config = build_config(
        parse_args(
            [
                "--xobs",
                "1",
                "--cluster",
                "slurm",
                "--adapt",
                "0",
                "8",
                "--walltime",
                "01:00:00",
                "--queue",
                "debug",
                "--account",
                "proj",
                "--max-in-flight",
                "4",
                "--chunk-size",
                "measure",
                "--chunk-seconds",
                "2",
                "--method",
                "snle",
                "--init-strategy",
                "sir",
                "--mcmc-workers",
                "2",
                "--num-chains",
                "8",
                "--commit-interval",
                "0",
            ]
        )
    )
    jq = config.cluster.jobqueue
    assert (jq.minimum_jobs, jq.maximum_jobs, jq.walltime, jq.queue, jq.account) == (
        0,
        8,
        "01:00:00",
        "debug",
        "proj",
    )
    assert config.cluster.max_in_flight == 4 and config.cluster.chunk_size == "measure"
    assert config.posterior.init_strategy == "sir" and config.posterior.mcmc_workers == 2
    assert config.cluster.commit_interval == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--xobs", "a", "b"], "--xobs takes numbers or one file path"),
        (["--xobs", "1", "nan"], "NaN or infinite"),
        (["--xobs", "missing.npy"], "neither a list of numbers nor an existing file"),
        (["--xobs", "1", "--rounds", "0"], "rounds: Input should be greater than or equal to 1"),
        (["--xobs", "1", "--low", "1", "--high", "1"], "prior width must be positive"),
        (["--rounds", "2"], "give the observation: --xobs"),
        (["--xobs", "1", "--config", "nope.yaml"], "config file 'nope.yaml' does not exist"),
        (
            ["--xobs", "1", "--method", "tfmpe", "--num-transforms", "3"],
            "network.num_transforms=3 does not apply to tfmpe",
        ),
        (
            [
                "--xobs",
                "1",
                "--method",
                "tnpse",
                "--tnpse.sde-type",
                "vp",
                "--tnpse.train-schedule",
                "lognormal",
            ],
            "applies only to sde_type='ve'",
        ),
        (
            ["--xobs", "1", "--method", "tfmpe", "--sampler", "mcmc"],
            "posterior.sampler='mcmc' does not apply to tfmpe",
        ),
    ],
)
def test_cli_bad_input_gets_a_clear_error_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_rejects_unknown_config_keys(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("xobs = [1.0]\nrunds = 3\n")
    assert main(["--config", str(tmp_path / "c.toml")]) == 2
    assert "runds: unknown setting" in capsys.readouterr().err


def test_cli_help_documents_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "flows.online", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--xobs",
        "--simulator",
        "--prior",
        "--low",
        "--high",
        "--method",
        "--rounds",
        "--simulations-per-round",
        "--workers",
        "--run-dir",
        "--run-id",
        "--seed",
        "--config",
        "--device",
        "--logger",
        "--logger-uri",
        "--dask-address",
    ):
        assert flag in out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tfmpe", "tnpse"])
def test_the_command_line_runs_a_vector_field_method_and_extends_it(
    tmp_path, prefect_server, method
):
    """``--method tfmpe`` / ``tnpse`` end to end through the command line and the flow: round
    2 draws from the truncated prior, and the same command with more rounds extends it."""
    argv = [
        "--xobs",
        "0.5",
        "-0.3",
        "--method",
        method,
        "--rounds",
        "2",
        "--simulations-per-round",
        "200",
        "--workers",
        "1",
        "--max-epochs",
        "15",
        "--num-samples",
        "200",
        f"--{method}.num-samples-to-estimate",
        "500",
        "--calibration-simulations",
        "0",
        "--predictive-simulations",
        "20",
        "--logger",
        "none",
        "--run-dir",
        str(tmp_path),
        "--run-id",
        method,
        "--no-progress",
    ]
    assert main(argv) == 0
    store = RunStore.open(tmp_path / method / "run.h5")
    assert [store.stage(r) for r in (1, 2)] == [Stage.DONE, Stage.DONE]
    proposal = store.round_info(2).proposal
    assert proposal["kind"] == "truncated_prior" and proposal["density"] == "log_prob"
    assert 0 < proposal["kept"] <= 1  # counted on prior draws, an ODE solve each
    assert store.read_network(2)[1].role == "vector_field"
    assert store.diagnostics(2).map is not None  # map_iterations auto: 20 steps
    assert main([*argv, "--rounds", "3"]) == 0
    assert store.stage(3) == Stage.DONE and store.round_info(3).proposal["round"] == 2
