"""The multi-round SNPE loop an sbi user writes by hand (sbi's docs), for the benchmarks.

python benchmarks/sbi_loop.py --rounds 3 --simulations 1000 --xobs 0.5 -0.3
"""

from __future__ import annotations

import argparse
import json
import time

T0 = time.perf_counter()

import torch  # noqa: E402
from sbi.inference import NPE  # noqa: E402
from sbi.utils import BoxUniform  # noqa: E402

from sbi_rounds.examples import linear_gaussian  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--simulations", type=int, default=1000)
    p.add_argument("--xobs", type=float, nargs="+", default=[0.5, -0.3])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    dim = len(args.xobs)
    prior = BoxUniform(low=-2 * torch.ones(dim), high=2 * torch.ones(dim))
    x_o = torch.tensor(args.xobs)
    inference = NPE(prior=prior, density_estimator="maf", show_progress_bars=False)
    proposal = prior
    stages = {"sample": 0.0, "simulate": 0.0, "train": 0.0, "posterior": 0.0}
    epochs = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        theta = proposal.sample((args.simulations,))
        stages["sample"] += time.perf_counter() - t
        t = time.perf_counter()
        x = linear_gaussian(theta)
        stages["simulate"] += time.perf_counter() - t
        t = time.perf_counter()
        estimator = inference.append_simulations(theta, x, proposal=proposal).train()
        stages["train"] += time.perf_counter() - t
        epochs.append(inference.summary["epochs_trained"][-1])
        t = time.perf_counter()
        posterior = inference.build_posterior(estimator)
        proposal = posterior.set_default_x(x_o)
        samples = posterior.sample((1000,), show_progress_bars=False)
        stages["posterior"] += time.perf_counter() - t
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - T0,
                "stages": stages,
                "epochs": epochs,
                "posterior_mean": samples.mean(0).tolist(),
                "posterior_std": samples.std(0).tolist(),
            }
        )
    )


if __name__ == "__main__":
    main()
