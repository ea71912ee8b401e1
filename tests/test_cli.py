"""The ``sbi-rounds`` command: generated flags, environment variables, subcommands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from small_run import SMALL

from flows.cli.flags import ALIASES, COMBINED, flag_name, setting_values
from flows.cli.run import build_config, main, parse_args, parser
from sbi_rounds.config import RunConfig
from sbi_rounds.config.fields import settings_of
from sbi_rounds.config.sources import env_name, resolve
from sbi_rounds.store import RunStore, Stage

SETTINGS = list(settings_of(RunConfig))
ROOT = Path(__file__).resolve().parent.parent


def _example(setting):
    """Words that set ``setting`` on the command line."""
    kind = setting.kind()
    if setting.path == ("simulator", "command"):
        return ["prog {input} {output}"]
    if kind.mapping:
        return ["noise=0.1"]
    if kind.scalar is bool and not kind.is_list and not kind.choices:
        return []
    if kind.choices:
        return [str(kind.choices[-1])]
    value = {int: "3", float: "0.5", str: "text"}[kind.scalar]
    return [value, value] if kind.is_list else [value]


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.dotted for s in SETTINGS])
def test_every_setting_has_a_flag_with_its_description_and_default(setting):
    args = parse_args([flag_name(setting), *_example(setting)])
    data = setting_values(args)
    node = data
    for key in setting.path:
        assert key in node, f"{flag_name(setting)} does not set {setting.dotted}"
        node = node[key]
    assert setting.field.description, f"{setting.dotted} has no description"
    assert "(default: " in setting.help or setting.required


def test_the_help_shows_every_flag_and_the_documented_short_ones():
    text = parser().format_help()
    for setting in SETTINGS:
        assert flag_name(setting) in text
    for flags in ALIASES.values():
        assert all(f in text for f in flags)
    assert all(flag in text for flag in COMBINED)
    assert all(path in {s.dotted for s in SETTINGS} for path in ALIASES)
    assert "(default: 500)" in text and "SBI_ROUNDS_TRAINING__BATCH_SIZE" in text


def test_the_command_and_package_descriptions_name_every_method():
    # `sbi-rounds --help` stays fast by not importing the registry, so its list and
    # pyproject's are written by hand; this catches a method added without them.
    import tomllib

    from flows.cli.main import USAGE
    from flows.cli.run import DESCRIPTION
    from sbi_rounds.methods import METHODS

    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["description"]
    for text in (" ".join(USAGE.split()), package, DESCRIPTION):
        named = re.search(r"inference \(([A-Z, ]+)\)", text)
        assert named, text
        assert named.group(1).split(", ") == [m.upper() for m in METHODS], text


def test_every_flag_the_readme_and_the_docs_document_is_accepted():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    readme = "\n".join(p.read_text() for p in pages)
    from flows.cli.campaign import parser as campaign_parser
    from flows.cli.export import parser as export_parser
    from flows.cli.report import parser as report_parser
    from flows.cli.status import parser as status_parser
    from flows.cli.verify import parser as verify_parser

    parsers = (
        parser(),
        campaign_parser(),
        export_parser(),
        report_parser(),
        status_parser(),
        verify_parser(),
    )
    known = {o for p in parsers for a in p._actions for o in a.option_strings}

    documented = set(re.findall(r"`(--[a-z][a-z0-9.-]*)", readme))
    documented.discard("--lifetime")  # dask-worker's, named where walltimes are explained
    assert documented - known == set()


def test_settings_resolve_flag_over_environment_over_file_over_default(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "xobs: [1, 2]\nrounds: 4\nseed: 3\ntraining: {batch_size: 10, max_epochs: 9}\n"
    )
    environ = {
        "SBI_ROUNDS_ROUNDS": "5",
        "SBI_ROUNDS_TRAINING__BATCH_SIZE": "20",
        "SBI_ROUNDS_SIMULATIONS_PER_ROUND": "100 200",
        "SBI_ROUNDS_INPUT": "not a setting: an external simulator's variable",
    }
    config = build_config(
        parse_args(["--config", str(tmp_path / "c.yaml"), "--rounds", "6"]), environ
    )
    assert config.rounds == 6  # flag
    assert config.training.batch_size == 20  # environment over file
    assert config.training.max_epochs == 9 and config.seed == 3  # file
    assert config.simulations_per_round == [100, 200]
    assert config.training.learning_rate == 5e-4  # default
    environ = {"SBI_ROUNDS_CONFIG": str(tmp_path / "c.yaml"), "SBI_ROUNDS_XOBS": "0.1 0.2 0.3"}
    config = resolve({}, environ)
    assert config.xobs == [0.1, 0.2, 0.3] and config.rounds == 4
    assert env_name(next(s for s in SETTINGS if s.dotted == "cluster.jobqueue.walltime")) == (
        "SBI_ROUNDS_CLUSTER__JOBQUEUE__WALLTIME"
    )


def test_a_prior_from_a_higher_source_replaces_the_other_kind(tmp_path):
    (tmp_path / "c.yaml").write_text("xobs: [1]\nprior: {path: simulators:gaussian_prior_2d}\n")
    args = parse_args(["--config", str(tmp_path / "c.yaml"), "--low", "0", "--high", "1"])
    assert build_config(args, {}).prior.path is None
    config = resolve(
        {},
        {
            "SBI_ROUNDS_XOBS": "1",
            "SBI_ROUNDS_PRIOR__PATH": "a:b",
            "SBI_ROUNDS_CLUSTER__ADDRESS": "tcp://h:1",
        },
    )
    assert config.prior.low is None and config.cluster.kind == "address"


def test_none_booleans_and_mappings_from_flags():
    config = build_config(
        parse_args(
            [
                "--xobs",
                "1",
                "--max-epochs",
                "7",
                "--patience",
                "none",
                "--dashboard",
                "--no-training.resume",
                "--simulator.kwargs",
                "noise=0.2",
                "--num-atoms",
                "4",
                "--chunk-size",
                "50",
                "--training.scheduler.kind",
                "cosine",
                "--training.retrain-from-scratch",
                "true",
            ]
        ),
        {},
    )
    assert config.training.patience is None and config.cluster.dashboard
    assert config.training.resume is False and config.simulator.kwargs == {"noise": 0.2}
    assert config.npe.num_atoms == config.nre.num_atoms == 4
    assert config.cluster.chunk_size == 50 and config.training.scheduler.kind == "cosine"
    assert config.training.retrain_from_scratch is True
    with pytest.raises(SystemExit):
        parse_args(["--xobs", "1", "--training.retrain-from-scratch", "sometimes"])
    config = build_config(
        parse_args(["--xobs", "1", "--network", "none", "--network.z-score-x", "none"]), {}
    )
    assert config.network.model is None and config.network.z_score_x == "none"


def test_print_config_is_yaml_that_gives_the_same_settings_back(tmp_path, capsys):
    assert (
        main(["--xobs", "0.5", "-0.3", "--rounds", "4", "--batch-size", "64", "--print-config"])
        == 0
    )
    text = capsys.readouterr().out
    (tmp_path / "saved.yaml").write_text(text)
    again = build_config(parse_args(["--config", str(tmp_path / "saved.yaml")]), {})
    assert again == RunConfig(**yaml.safe_load(text))
    assert again.rounds == 4 and again.training.batch_size == 64


def _store_with_a_round(path: Path) -> RunStore:
    config = RunConfig(xobs=[0.5, -0.3], rounds=3, run_dir=str(path.parent.parent))
    store = RunStore.create(
        path, config=config.model_dump(mode="json"), fingerprint=config.fingerprint()
    )
    store.plan_round(
        1,
        num_simulations=4,
        theta_dim=2,
        x_dim=2,
        chunk_size=2,
        num_posterior_samples=3,
        proposal={"kind": "prior"},
    )
    store.write_theta(1, 0, np.ones((4, 2)))
    store.write_chunk(1, 0, np.full((2, 2), 2.0), seconds=0.1)
    store.write_samples(1, 0, np.zeros((3, 2)))
    store.set_stage(1, Stage.SIMULATED)
    return store


def test_status_and_export_read_a_run(tmp_path, capsys):
    from flows.cli.main import main as sbi_rounds

    store = _store_with_a_round(tmp_path / "runs" / "one" / "run.h5")
    assert sbi_rounds(["status", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "one  (snpe, 0 of 3 rounds done, not running)" in out
    assert "simulated" in out and "2/4" in out
    (header,) = [line.split() for line in out.splitlines() if line.split()[:1] == ["round"]]
    assert header == ["round", "stage", "simulated", "valid", "epochs", "best", "val", "loss"]
    assert sbi_rounds(["export", str(store.path.parent), "-o", str(tmp_path / "e.npz")]) == 0
    data = np.load(tmp_path / "e.npz")
    assert data["round_001_theta"].shape == (4, 2) and data["round_001_valid"].sum() == 2
    assert data["round_001_posterior_samples"].shape == (3, 2)
    assert list(data["parameter_names"]) == ["theta_1", "theta_2"]
    assert sbi_rounds(["status", str(tmp_path / "nothing")]) == 2
    assert sbi_rounds(["nonsense"]) == 2


def _shadowing_dir(tmp_path: Path) -> Path:
    """A project directory with its own ``tasks.py`` and ``flows/``, as invoke or Celery
    projects have."""
    work = tmp_path / "project"
    (work / "flows").mkdir(parents=True)
    (work / "flows" / "__init__.py").write_text("raise ImportError('the project flows')\n")
    (work / "tasks.py").write_text("raise ImportError('the project tasks.py')\n")
    return work


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    return env


def test_the_command_works_from_a_directory_with_its_own_tasks_and_flows(tmp_path):
    work = _shadowing_dir(tmp_path)
    command = Path(sys.executable).with_name("sbi-rounds")
    out = subprocess.run(
        [str(command), "run", "--help"],
        cwd=work,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--training.batch-size" in out.stdout
    (work / "flows" / "__init__.py").unlink()  # python -m flows.online needs our flows
    (work / "flows").rmdir()
    out = subprocess.run(
        [sys.executable, "-m", "flows.online", "--help"],
        cwd=work,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_a_run_from_a_directory_with_its_own_tasks_and_flows(tmp_path):
    work = _shadowing_dir(tmp_path)
    command = str(Path(sys.executable).with_name("sbi-rounds"))
    run = subprocess.run(
        [
            command,
            "run",
            "--xobs",
            "0.5",
            "-0.3",
            *SMALL,
            "--run-id",
            "here",
            "--predictive-simulations",
            "0",
            "--calibration-simulations",
            "0",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert RunStore.open(work / "runs" / "here" / "run.h5").stage(1) == Stage.DONE
    for args in (["status"], ["export", "runs/here"], ["report", "runs/here"]):
        out = subprocess.run(
            [command, *args], cwd=work, capture_output=True, text=True, env=_env(), timeout=300
        )
        assert out.returncode == 0, out.stderr
    assert (work / "runs" / "here" / "here.npz").is_file()
    assert (work / "runs" / "here" / "report" / "report.html").is_file()
