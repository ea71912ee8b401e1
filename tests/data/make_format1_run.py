"""Writes ``tests/data/format1-run``: a small run made by sbi-rounds' run file format 1.

It was run once, at commit 16303da (the last version that wrote format 1), from the
repository root: ``python tests/data/make_format1_run.py``. ``tests/test_store_format1.py``
opens, reports, loads and extends the copy committed beside it; run with a later version,
this script writes that version's format instead.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/simulators.py, for the Dask workers too


def main() -> None:
    from sbi_rounds.cluster import open_client
    from sbi_rounds.config import ClusterConfig, RunConfig
    from sbi_rounds.diagnostics import diagnose
    from sbi_rounds.lifecycle.session import run_session
    from sbi_rounds.stages.round import run_round

    work = HERE / "format1-work"
    shutil.rmtree(work, ignore_errors=True)
    config = RunConfig(
        xobs=[0.5, -0.3],
        rounds=2,
        simulations_per_round=50,
        run_dir=str(work),
        run_id="format1-run",
        training={"max_epochs": 5, "batch_size": 25, "checkpoint_every": 0},
        network={"model": "maf", "hidden_features": 8, "num_transforms": 1},
        posterior={"num_samples": 50},
        logger={"backend": "none"},
        cluster={"workers": 1, "chunk_size": 25},
        diagnostics={"predictive_simulations": 20, "calibration_simulations": 0},
    )
    with open_client(ClusterConfig(workers=1)) as client, run_session(config) as run:
        for round_ in (1, 2):
            run_round(run, round_, client, pairplot=False)
            diagnose(run, round_, client)
    target = HERE / "format1-run"
    shutil.rmtree(target, ignore_errors=True)
    leave_out = shutil.ignore_patterns("run.lock", "*.png")
    shutil.copytree(work / "format1-run", target, ignore=leave_out)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
