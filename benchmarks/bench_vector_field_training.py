"""How much training a vector field needs: retrain one on a kept run's simulations.

TFMPE's posteriors on sbibm's two_moons stayed blurred at 10 x 1,000 simulations (C2ST 0.78
with the defaults) where a flow resolved the crescents (SNPE 0.51). This benchmark separates
the estimator's training from the rounds: it takes every valid simulation of a run kept by
``bench_sbibm.py --runs`` (all rounds together), trains a fresh flow-matching network on them
with the width, early-stopping patience and training-time distribution given, samples
10,000 times at the run's observation and scores them by C2ST against sbibm's reference
samples (``bench_sbibm.c2st``).

Training times: ``--time-power 1`` is sbi's uniform ``t``; ``k > 1`` draws ``t = u ** k``
(``u`` uniform; ``tfmpe.time_sampling: power``): more weight near ``t = 0``, where sbi's
flow matching is at the data and the posterior's fine structure is learned.

One JSON line per cell in ``--out`` (written when it finishes; a cell already there is
skipped)::

    OMP_NUM_THREADS=1 python benchmarks/bench_vector_field_training.py \\
        --run benchmarks/out/sbibm-runs/two_moons-10k-tfmpe-1-0 --task two_moons \\
        --observation 1 --hidden 128 --patience 300 --time-power 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_sbibm  # noqa: E402

HERE = Path(__file__).parent
OUT = HERE / "results" / "vector_field_training.jsonl"


def simulations(run: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every round's valid ``theta (N, D)`` and ``x (N, K)`` of a run (``load_run``)."""
    thetas, xs = [], []
    for round_ in run.store.rounds():
        theta, x, valid = run.store.read_simulations(round_)
        thetas.append(theta[valid])
        xs.append(x[valid])
    return torch.tensor(np.concatenate(thetas)).float(), torch.tensor(np.concatenate(xs)).float()


def run_cell(args: argparse.Namespace, run_file: Path) -> dict[str, Any]:
    """Train, sample at the observation, score; the cell's JSON row."""
    from sbi_rounds.methods.tfmpe import power_times
    from sbi_rounds.methods.vector_field import vector_field_loss, vector_field_posterior
    from sbi_rounds.networks import build_network, network_settings
    from sbi_rounds.results import load_run
    from sbi_rounds.training.config import TrainConfig
    from sbi_rounds.training.runner import run_training
    from sbi_rounds.training.setup import split_train_val

    run = load_run(run_file)
    config = run.config
    theta, x = simulations(run)
    if config.method != "tfmpe":
        raise SystemExit(f"{run_file}: a {config.method} run; this benchmark takes tfmpe runs")
    settings = {**network_settings(config), "hidden_features": args.hidden}
    torch.manual_seed(args.seed)
    network = build_network(settings, theta, x)
    vf = config.method_settings
    times = None if args.time_power == 1 else power_times(args.time_power)
    loss = vector_field_loss(vf.validation_times, vf.validation_times_nugget, times)
    train, validation = split_train_val((theta, x), 0.1, args.seed)
    start = time.perf_counter()
    summary = run_training(
        TrainConfig(patience=args.patience, seed=args.seed), network, loss, train, validation
    )
    train_s = time.perf_counter() - start
    xobs, reference = bench_sbibm.observation(
        bench_sbibm.fetch_data(Path(args.data)), args.task, args.observation
    )
    posterior = vector_field_posterior(network, run.prior, torch.tensor([xobs]).float(), vf)
    torch.manual_seed(args.seed + 1)
    samples = posterior.sample((bench_sbibm.NUM_SAMPLES,), show_progress_bars=False)
    return {
        "label": args.label,
        "run": str(run_file.parent.parent.name),
        "task": args.task,
        "observation": args.observation,
        "rows": len(theta),
        "hidden": args.hidden,
        "patience": args.patience,
        "time_power": args.time_power,
        "seed": args.seed,
        "epochs": summary.epochs,
        "train_s": round(train_s, 1),
        "c2st": round(bench_sbibm.c2st(reference, samples), 4),
        "versions": bench_sbibm.versions(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a kept run's folder (or its run.h5)")
    parser.add_argument("--task", required=True, choices=["two_moons", "slcp", "gaussian_linear"])
    parser.add_argument("--observation", type=int, required=True, choices=[1, 2, 3, 4, 5])
    parser.add_argument("--hidden", type=int, default=50, help="network width")
    parser.add_argument("--patience", type=int, default=20, help="early-stopping patience")
    parser.add_argument("--time-power", type=float, default=1.0, help="t = u ** power")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", help="names the cell (default: from the settings)")
    parser.add_argument("--data", default=str(HERE / "out" / "sbibm"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    args.label = args.label or (f"h{args.hidden}-p{args.patience}-pow{args.time_power:g}")
    run = Path(args.run)
    run_file = run if run.suffix == ".h5" else next(run.glob("*/run.h5"))
    out = Path(args.out)
    key = (str(run_file.parent.parent.name), args.observation, args.label, args.seed)
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if (row["run"], row["observation"], row["label"], row["seed"]) == key:
                print(json.dumps(row))
                return
    row = run_cell(args, run_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
