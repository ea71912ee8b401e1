"""Epochs per second of the unified runner against sbi's own ``train()``, in one run.

Both train the same network from the same initial weights on the same train/validation
split (sbi draws the split with ``torch.randperm`` and then builds the network from the
global RNG; we repeat those two steps from the same seed), for the same number of epochs
with early stopping off, alternating sbi and ours ``--repeats`` times. Reported: median
epochs per second of each, the speed-up, and the final validation losses.

    python benchmarks/bench_training.py --device cpu --out benchmarks/out/training.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from sbi.inference import NLE, NPE, NRE
from sbi.neural_nets import classifier_nn, likelihood_nn, posterior_nn
from sbi.utils import BoxUniform

from sbi_rounds.methods import nle_loss, npe_loss, nre_b_loss
from sbi_rounds.training import TrainConfig, run_training
from sbi_rounds.training.trackers import NullTracker

warnings.filterwarnings("ignore")


def _case(name, n, dim):
    prior = BoxUniform(-2 * torch.ones(dim), 2 * torch.ones(dim))
    torch.manual_seed(0)
    theta = prior.sample((n,))
    x = theta + 0.1 * torch.randn(n, dim)
    cases = {
        "npe-maf": (NPE, posterior_nn("maf", hidden_features=50, num_transforms=5), npe_loss),
        "npe-nsf": (NPE, posterior_nn("nsf", hidden_features=50, num_transforms=5), npe_loss),
        "nle-maf": (NLE, likelihood_nn("maf", hidden_features=50, num_transforms=5), nle_loss),
        "nre-resnet": (NRE, classifier_nn("resnet", hidden_features=50), nre_b_loss(10)),
    }
    cls, builder, loss = cases[name]
    return prior, theta, x, cls, builder, loss


def run_sbi(prior, theta, x, cls, builder, epochs, batch, device, seed):
    torch.manual_seed(seed)
    trainer = cls(prior, builder, device=device, show_progress_bars=False, tracker=NullTracker())
    trainer.append_simulations(theta, x)
    t0 = time.perf_counter()
    # sbi runs epochs 0..max_num_epochs inclusive: epochs - 1 gives `epochs` epochs.
    trainer.train(training_batch_size=batch, max_num_epochs=epochs - 1, stop_after_epochs=10**6)
    seconds = time.perf_counter() - t0
    val = trainer.summary["validation_loss"][-1]
    if cls is NRE:  # sbi divides NRE's batch-mean loss by the batch size once more
        val *= min(batch, len(theta) - int(0.9 * len(theta)))
    return epochs / seconds, val


def run_ours(theta, x, builder, loss, epochs, batch, device, seed):
    torch.manual_seed(seed)
    n = len(theta)
    perm = torch.randperm(n)
    tr, va = perm[: int(0.9 * n)], perm[int(0.9 * n) :]
    net = builder(theta[tr], x[tr])
    config = TrainConfig(
        batch_size=batch,
        max_epochs=epochs,
        patience=None,
        seed=seed,
        device=device,
        checkpoint_every=0,
    )
    t0 = time.perf_counter()
    summary = run_training(config, net, loss, (theta[tr], x[tr]), (theta[va], x[va]))
    seconds = time.perf_counter() - t0
    return epochs / seconds, summary.history["val_loss"][-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["npe-maf", "npe-nsf", "nle-maf", "nre-resnet"])
    p.add_argument("--n", type=int, default=5000, help="simulations")
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.cases:
        prior, theta, x, cls, builder, loss = _case(name, args.n, args.dim)
        sbi_rates, our_rates, sbi_vals, our_vals = [], [], [], []
        for r in range(args.repeats):
            rate, val = run_sbi(
                prior, theta, x, cls, builder, args.epochs, args.batch, args.device, seed=r
            )
            sbi_rates.append(rate)
            sbi_vals.append(val)
            rate, val = run_ours(
                theta, x, builder, loss, args.epochs, args.batch, args.device, seed=r
            )
            our_rates.append(rate)
            our_vals.append(val)
        row = {
            "case": name,
            "device": args.device,
            "n": args.n,
            "epochs": args.epochs,
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "sbi_epochs_per_s": statistics.median(sbi_rates),
            "ours_epochs_per_s": statistics.median(our_rates),
            "speedup": statistics.median(o / s for o, s in zip(our_rates, sbi_rates, strict=True)),
            "sbi_final_val_loss": statistics.mean(sbi_vals),
            "ours_final_val_loss": statistics.mean(our_vals),
        }
        rows.append(row)
        print(
            f"{name:11s} {args.device}: sbi {row['sbi_epochs_per_s']:7.2f} ep/s, ours "
            f"{row['ours_epochs_per_s']:7.2f} ep/s, x{row['speedup']:.2f}; final val loss "
            f"sbi {row['sbi_final_val_loss']:.3f} ours {row['ours_final_val_loss']:.3f}",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
