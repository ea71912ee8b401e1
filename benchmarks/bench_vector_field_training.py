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

Any other setting of the run's config can be changed for the retraining with ``--set`` (as
in ``bench_sbibm.py``: ``--set training.scheduler.kind=plateau --set network.hidden_features=
128``); ``--hidden``, ``--patience`` and ``--time-power`` override them, and without any of
these the network is trained as the run's own config says (so retraining a run made with a
recipe measures the recipe's last round on its own, with another ``--seed``).

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


def retraining_config(args: argparse.Namespace, config: Any) -> Any:
    """The run's config with ``--set`` and ``--hidden``/``--patience``/``--time-power``
    applied (validated again: a wrong setting is an error naming it)."""
    from sbi_rounds.config import RunConfig

    sets = list(args.set)
    if args.hidden is not None:
        sets.append(f"network.hidden_features={args.hidden}")
    if args.patience is not None:
        sets.append(f"training.patience={args.patience}")
    base = config.model_dump(mode="json", exclude_unset=True)
    if args.time_power is not None:
        if args.time_power == 1:  # uniform: a time_power the run set no longer applies
            base.get("tfmpe", {}).pop("time_power", None)
            sets.append("tfmpe.time_sampling=uniform")
        else:
            sets += ["tfmpe.time_sampling=power", f"tfmpe.time_power={args.time_power}"]
    return RunConfig(**bench_sbibm._merge(base, bench_sbibm._nested(sets)))


def run_cell(args: argparse.Namespace, run_file: Path) -> dict[str, Any]:
    """Train, sample at the observation, score; the cell's JSON row."""
    from sbi_rounds.builders.networks import build_network, network_architecture
    from sbi_rounds.methods import get_method
    from sbi_rounds.methods.vector_field import vector_field_posterior
    from sbi_rounds.report.results import load_run
    from sbi_rounds.training.runner import run_training
    from sbi_rounds.training.setup import split_train_val

    run = load_run(run_file)
    if run.config.method != "tfmpe":
        raise SystemExit(f"{run_file}: a {run.config.method} run; this benchmark takes tfmpe runs")
    config = retraining_config(args, run.config)
    theta, x = simulations(run)
    settings = network_architecture(config)
    torch.manual_seed(args.seed)
    network = build_network(get_method(config.method), settings, theta, x)
    vf = config.method_settings
    loss = get_method(config.method).loss_fn(vf, run.prior, config.rounds)
    tcfg = config.training.model_copy(update={"seed": args.seed})
    train, validation = split_train_val((theta, x), tcfg.validation_fraction, args.seed)
    start = time.perf_counter()
    summary = run_training(tcfg, network, loss, train, validation)
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
        "hidden": settings["hidden_features"],
        "patience": tcfg.patience,
        "time_power": vf.time_power if vf.time_sampling == "power" else 1.0,
        "settings": list(args.set),
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
    parser.add_argument("--hidden", type=int, help="network width (default: the run's)")
    parser.add_argument("--patience", type=int, help="early-stopping patience (the run's)")
    parser.add_argument("--time-power", type=float, help="t = u ** power (the run's times)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another setting of the run's config for the retraining, e.g. "
        "training.batch_size=100 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", help="names the cell (default: from the settings)")
    parser.add_argument("--data", default=str(HERE / "out" / "sbibm"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    if args.label is None:
        if args.set or None in (args.hidden, args.patience, args.time_power):
            parser.error(
                "--label is required with --set or without all of --hidden, "
                "--patience and --time-power"
            )
        args.label = f"h{args.hidden}-p{args.patience}-pow{args.time_power:g}"
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
