"""A campaign against separate commands: N observations, each R rounds of S simulations.

Both as fresh processes (interpreter start and imports included): ``sbi-rounds campaign``
over a table of N observations (one Prefect server, one Dask cluster, imports paid once,
``--max-concurrent`` runs at once) and N ``sbi-rounds run --xobs ROW`` commands one after
another (each its own server and cluster). Same settings and seed, so the same posteriors
(checked). Each cell's result is written to ``benchmarks/results/campaign.jsonl`` as it
finishes; a rerun skips the cells found there (``--fresh`` to start over).

    OMP_NUM_THREADS=1 python benchmarks/bench_campaign.py --observations 10 --rounds 2 \\
        --simulations 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "campaign.jsonl"


def _shared(args: argparse.Namespace) -> list[str]:
    return [
        "--rounds",
        str(args.rounds),
        "--simulations-per-round",
        str(args.simulations),
        "--seed",
        "1",
        "--logger",
        "none",
        "--workers",
        str(args.workers),
        *(args.settings or []),
    ]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(home)}


def _load() -> float:
    return os.getloadavg()[0]


def run_campaign(args: argparse.Namespace, table: Path, work: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "flows.cli.main",
        "campaign",
        "--observations",
        str(table),
        "--campaign-dir",
        str(work / "campaign"),
        "--max-concurrent",
        str(args.max_concurrent),
        *_shared(args),
    ]
    load, t0 = _load(), time.perf_counter()
    subprocess.run(cmd, cwd=work, env=_env(work / "prefect-c"), check=True, capture_output=True)
    return {"seconds": time.perf_counter() - t0, "load_before": load, "load_after": _load()}


def run_separate(args: argparse.Namespace, rows: np.ndarray, work: Path) -> dict:
    load, t0, each = _load(), time.perf_counter(), []
    for i, row in enumerate(rows):
        t = time.perf_counter()
        cmd = [
            sys.executable,
            "-m",
            "flows.cli.main",
            "run",
            "--xobs",
            *map(str, row),
            "--run-dir",
            str(work / "separate"),
            "--run-id",
            f"obs-{i:04d}",
            "--no-progress",
            *_shared(args),
        ]
        subprocess.run(cmd, cwd=work, env=_env(work / "prefect-s"), check=True, capture_output=True)
        each.append(time.perf_counter() - t)
    return {
        "seconds": time.perf_counter() - t0,
        "each": each,
        "load_before": load,
        "load_after": _load(),
    }


def _same(work: Path, n: int, rounds: int) -> bool:
    from sbi_rounds.store import RunStore

    return all(
        np.array_equal(
            RunStore.open(work / "campaign" / f"obs-{i:04d}" / "run.h5").read_samples(rounds),
            RunStore.open(work / "separate" / f"obs-{i:04d}" / "run.h5").read_samples(rounds),
        )
        for i in range(n)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--observations", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--simulations", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument(
        "--settings",
        nargs=argparse.REMAINDER,
        help="more settings for every run, last (e.g. --max-epochs 30)",
    )
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--fresh", action="store_true", help="ignore results recorded before")
    args = p.parse_args()
    key = {
        k: getattr(args, k)
        for k in ("observations", "rounds", "simulations", "workers", "max_concurrent", "settings")
    }
    done = {}
    if RESULTS.exists() and not args.fresh:
        for line in RESULTS.read_text().splitlines():
            record = json.loads(line)
            if record["settings"] == key:
                done[record["cell"]] = record
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = np.random.default_rng(0).uniform(-1, 1, size=(args.observations, 2))
    table = work / "obs.csv"
    np.savetxt(table, rows, delimiter=",")
    for cell, fn in (
        ("campaign", lambda: run_campaign(args, table, work)),
        ("separate", lambda: run_separate(args, rows, work)),
    ):
        if cell in done:
            print(f"{cell}: {done[cell]['seconds']:.1f} s (recorded before)")
            continue
        result = {"cell": cell, "settings": key, "cpus": os.cpu_count(), **fn()}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(result) + "\n")
        done[cell] = result
        print(
            f"{cell}: {result['seconds']:.1f} s (load {result['load_before']:.1f} -> "
            f"{result['load_after']:.1f})",
            flush=True,
        )
    ratio = done["campaign"]["seconds"] / done["separate"]["seconds"]
    print(f"campaign / separate: {ratio:.2f}")
    if (work / "campaign").exists() and (work / "separate").exists():
        print(f"same posteriors: {_same(work, args.observations, args.rounds)}")


if __name__ == "__main__":
    main()
