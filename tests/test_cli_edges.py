"""The command line's smaller edges, each through the real command: where ``export`` writes
and when it refuses, an empty ``--xobs`` file, a scheduler address without a port, the
flags ``campaign`` shares with ``run``, and what ``--accept-changed-code`` says it mixes."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from flows.cli.main import main as sbi_rounds
from sbi_rounds.config import RunConfig
from sbi_rounds.store import RunStore


def _run_with_a_round(directory: Path) -> RunStore:
    """A run file (no process ran it) with one round of 4 simulations, 2 committed."""
    config = RunConfig(xobs=[0.5, -0.3], rounds=3, run_dir=str(directory.parent))
    store = RunStore.create(
        directory / "run.h5", config=config.model_dump(mode="json"), fingerprint="f"
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
    return store


def _one_error(capsys, argv, *parts, status=2):
    code = sbi_rounds(argv)
    out, err = capsys.readouterr()
    assert code == status, out + err
    assert err.count("error: ") == 1 and len(err.strip().splitlines()) <= 2, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err
    return err


# --- export ---------------------------------------------------------------------------------
def test_export_prints_the_file_it_wrote(tmp_path, capsys):
    run = _run_with_a_round(tmp_path / "runs" / "one").path.parent
    (tmp_path / "out").mkdir()
    for output, written in [
        (tmp_path / "out", tmp_path / "out" / "one.npz"),  # a directory: <run id>.npz in it
        (tmp_path / "plain", tmp_path / "plain.npz"),  # numpy adds .npz: say so
        (tmp_path / "named.npz", tmp_path / "named.npz"),
    ]:
        assert sbi_rounds(["export", str(run), "-o", str(output)]) == 0
        assert capsys.readouterr().out.splitlines()[0] == f"exported {written}:"
        assert np.load(written)["round_001_theta"].shape == (4, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.npz", "out", "plain.npz", "runs"]


def test_export_refuses_to_overwrite_a_file_without_force(tmp_path, capsys):
    run = _run_with_a_round(tmp_path / "runs" / "one").path.parent
    target = tmp_path / "keep.npz"
    target.write_bytes(b"someone's results")
    _one_error(capsys, ["export", str(run), "-o", str(target)], f"{target} exists", "--force")
    assert target.read_bytes() == b"someone's results"
    assert sbi_rounds(["export", str(run), "-o", str(target), "--force"]) == 0
    assert np.load(target)["round_001_valid"].sum() == 2


# --- settings refused before anything is written ---------------------------------------------
def test_an_empty_xobs_file_is_one_line_naming_it(tmp_path, capsys):
    empty = tmp_path / "xobs.csv"
    empty.write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "input contained no data" would raise here
        _one_error(
            capsys,
            ["run", "--xobs", str(empty), "--run-dir", str(tmp_path / "runs")],
            f"{str(empty)!r} holds no numbers",
        )
    assert not (tmp_path / "runs").exists()


def test_a_scheduler_address_without_a_port_is_refused_before_the_run_file(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["run", "--xobs", "0.5", "-0.3", "--dask-address", "foo", "--run-dir", str(runs)]
    _one_error(capsys, argv, "cluster.address", "'foo' is not a Dask scheduler address")
    assert not runs.exists()


def test_a_shortened_flag_is_refused_not_guessed(tmp_path, capsys):
    runs = tmp_path / "runs"
    table = tmp_path / "x.csv"
    table.write_text("0.5,-0.3\n")
    for argv in (
        ["run", "--xobs", "0.5", "-0.3", "--round", "3", "--run-dir", str(runs)],
        ["campaign", "--observations", str(table), "--round", "3", "--campaign-dir", str(runs)],
    ):
        try:
            code = sbi_rounds(argv)
        except SystemExit as e:  # argparse's own exit
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and "unrecognized arguments: --round 3" in err, err
    assert not runs.exists()


def test_campaign_takes_no_progress_as_run_does(tmp_path, capsys):
    (tmp_path / "obs.csv").write_text("0.5,-0.3\n0.4,-0.2\n")
    argv = ["--observations", str(tmp_path / "obs.csv"), "--no-progress", "--print-config"]
    assert sbi_rounds(["campaign", *argv]) == 0
    assert "campaign:" in capsys.readouterr().out
    assert sbi_rounds(["run", "--xobs", "0.5", "-0.3", "--no-progress", "--print-config"]) == 0


# --- --accept-changed-code ---------------------------------------------------------------------
SIMULATOR = """
import torch


def simulate(theta):
    return theta + {shift}
"""


def test_accepted_changed_code_names_the_round_that_mixes_old_and_new(
    make_config, tmp_path, monkeypatch, caplog
):
    from sbi_rounds.lifecycle.session import run_session
    from sbi_rounds.store import Stage

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def write(shift: str) -> None:
        (tmp_path / "mixed_sim.py").write_text(SIMULATOR.format(shift=shift))
        sys.modules.pop("mixed_sim", None)
        importlib.invalidate_caches()

    write("0.0")
    config = make_config(rounds=2, simulator={"path": "mixed_sim:simulate"})
    with run_session(config) as run:
        store = run.store
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
        store.set_stage(1, Stage.SAMPLED)
        store.write_chunk(1, 0, np.full((2, 2), 1.0), seconds=0.1)  # the old code's half
    write("5.0")
    with caplog.at_level(logging.WARNING, logger="sbi_rounds"):
        with run_session(config, accept_changed_code=True):
            pass
    (message,) = [
        r.getMessage() for r in caplog.records if "accepted changed code" in r.getMessage()
    ]
    mixed = (
        "round 1 now mixes simulations of the old code (2 committed) and of the new (2 still "
        "to simulate)"
    )
    assert mixed in message, message
    assert mixed in RunStore.open(config.run_path).config_history()[-1]["changes"]
    sys.modules.pop("mixed_sim", None)
