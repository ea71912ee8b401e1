"""Whole CLI run against the hand-written sbi loop: same problem, budget, network, training.

Both run as fresh processes (interpreter start and imports included), alternating
``--repeats`` times: ``python -m flows.online`` (Prefect's temporary server, a local Dask
cluster, the HDF5 run file, pairplots) and ``benchmarks/sbi_loop.py``. Reported: median
wall times, their ratio, and where the time goes (stage timings from the run file).

    python benchmarks/bench_e2e.py --rounds 3 --simulations 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: argparse.Namespace, run_dir: Path, seed: int, checks: bool = False) -> dict:
    """One CLI run; ``checks=False`` turns off the posterior checks the sbi loop does not do."""
    cmd = [
        sys.executable,
        "-m",
        "flows.online",
        "--xobs",
        *map(str, args.xobs),
        "--rounds",
        str(args.rounds),
        "--simulations-per-round",
        str(args.simulations),
        "--run-dir",
        str(run_dir),
        "--seed",
        str(seed),
        "--logger",
        "none",
        "--no-progress",
        "--workers",
        str(args.workers),
        # the sbi loop's network and batch size (the defaults are NSF and "auto" since
        # issue 12; bench_sbibm.py measures those)
        "--network",
        "maf",
        "--batch-size",
        "200",
    ]
    if not checks:
        cmd += [
            "--predictive-simulations",
            "0",
            "--map-iterations",
            "0",
            "--calibration-simulations",
            "0",
        ]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    from sbi_rounds.report.results import load_run

    run = load_run(next(run_dir.glob("*/run.h5")))
    stages: dict[str, float] = {}
    epochs = []
    for r in run.store.rounds():
        for k, v in run.store.timings(r).by_stage().items():
            stages[k] = stages.get(k, 0.0) + v
        epochs.append(run.store.training_summary(r).epochs)
    samples = run.store.read_samples(run.store.rounds()[-1])
    return {
        "seconds": seconds,
        "stages": stages,
        "epochs": epochs,
        "posterior_mean": samples.mean(0).tolist(),
        "posterior_std": samples.std(0).tolist(),
    }


def run_sbi(args: argparse.Namespace, seed: int) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "sbi_loop.py"),
        "--rounds",
        str(args.rounds),
        "--simulations",
        str(args.simulations),
        "--seed",
        str(seed),
        "--xobs",
        *map(str, args.xobs),
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    result = json.loads(out[out.rindex('{"seconds"') :])  # sbi's last message has no newline
    result["seconds"] = time.perf_counter() - t0  # the whole process, like the CLI's
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--simulations", type=int, default=1000)
    p.add_argument("--xobs", type=float, nargs="+", default=[0.5, -0.3])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--with-checks",
        action="store_true",
        help="also time the CLI with its default posterior checks and report",
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    ours, theirs, checked = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            theirs.append(run_sbi(args, seed=r))
            ours.append(run_cli(args, Path(tmp) / f"rep{r}", seed=r))
            if args.with_checks:
                checked.append(run_cli(args, Path(tmp) / f"checks{r}", seed=r, checks=True))
            print(
                f"repeat {r}: cli {ours[-1]['seconds']:.1f} s (epochs {ours[-1]['epochs']}), "
                f"sbi loop {theirs[-1]['seconds']:.1f} s (epochs {theirs[-1]['epochs']})"
                + (f", cli with checks {checked[-1]['seconds']:.1f} s" if checked else ""),
                flush=True,
            )
    cli = statistics.median(o["seconds"] for o in ours)
    loop = statistics.median(t["seconds"] for t in theirs)
    ratios = [o["seconds"] / t["seconds"] for o, t in zip(ours, theirs, strict=True)]
    summary = {
        "rounds": args.rounds,
        "simulations": args.simulations,
        "workers": args.workers,
        "cli_seconds_median": cli,
        "sbi_loop_seconds_median": loop,
        "ratio_of_medians": cli / loop,
        "ratio_per_repeat": ratios,
        "cli_stage_seconds_mean": {
            k: statistics.mean(o["stages"][k] for o in ours) for k in ours[0]["stages"]
        },
        "sbi_stage_seconds_mean": {
            k: statistics.mean(t["stages"][k] for t in theirs) for k in theirs[0]["stages"]
        },
        "cli_with_checks_seconds_median": (
            statistics.median(c["seconds"] for c in checked) if checked else None
        ),
        "cli_epochs": [o["epochs"] for o in ours],
        "sbi_epochs": [t["epochs"] for t in theirs],
        "cli_posterior_mean": ours[-1]["posterior_mean"],
        "cli_posterior_std": ours[-1]["posterior_std"],
        "sbi_posterior_mean": theirs[-1]["posterior_mean"],
        "sbi_posterior_std": theirs[-1]["posterior_std"],
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
