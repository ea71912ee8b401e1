"""Writes ``tests/data/flat-run``: a small run in the flat layout (every file side by side).

It was run once, at commit 32a62e9 (the last version that wrote the flat layout), from that
checkout's root: ``python <this file>``. ``tests/test_store_flat_layout.py`` opens, reports,
exports, loads and resumes the copy committed beside it; run with a later version, this
script writes that version's layout instead.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/simulators.py, for the Dask workers too


def main() -> None:
    from sbi_rounds.round import run_round
    from sbi_rounds.session import run_session

    from sbi_rounds.cluster import open_client
    from sbi_rounds.config import ClusterConfig, RunConfig
    from sbi_rounds.diagnostics import diagnose

    work = HERE / "flat-work"
    shutil.rmtree(work, ignore_errors=True)
    config = RunConfig(
        xobs=[0.5, -0.3],
        rounds=2,
        simulations_per_round=50,
        run_dir=str(work),
        run_id="flat-run",
        training={"max_epochs": 5, "batch_size": 25, "checkpoint_every": 0},
        network={"model": "maf", "hidden_features": 8, "num_transforms": 1},
        posterior={"num_samples": 50},
        logger={"backend": "none"},
        cluster={"workers": 1, "chunk_size": 25},
        diagnostics={"predictive_simulations": 20, "calibration_simulations": 0},
    )
    with open_client(ClusterConfig(workers=1)) as client, run_session(config) as run:
        for round_ in (1, 2):
            run_round(run, round_, client)
            diagnose(run, round_, client)
    target = HERE / "flat-run"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(work / "flat-run", target, ignore=shutil.ignore_patterns("run.lock"))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
