"""C2ST of each method's posterior against a reference, next to the hand-written sbi loop.

For every (problem, method, seed): our rounds (the library stages the flow runs, on a
local Dask cluster) and the loop an sbi user writes from sbi's docs, with the same
simulator, prior, budget, network, training settings and MCMC settings. Both final
posteriors are compared with a reference sample by C2ST as sbibm defines it (an MLP
classifier with two hidden layers of 10*D units, 5-fold cross-validation, z-scored by the
reference): 0.5 is indistinguishable, 1.0 is disjoint.

Problems with an honest reference:
* ``gaussian``: linear Gaussian model under a N(0, I) prior; closed-form posterior.
* ``quadratic``: ``x = theta^2 + 0.1 eps`` under U[-2, 2]^2, 4 posterior modes; exact
  reference by rejection sampling with the known likelihood.

    python benchmarks/bench_c2st.py --seeds 0 1 --out benchmarks/out/c2st.json
    python benchmarks/bench_c2st.py --summarize benchmarks/results/c2st.json  # table only

The table pairs ours with the sbi loop seed by seed: the mean difference (ours - sbi; lower
C2ST is better) with its 95% confidence interval (Student t over the seeds). A cell is
"worse" only when the whole interval lies above 0, "better" when it lies below 0.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from sbi.inference import NLE, NPE, NRE
from sbi.neural_nets import classifier_nn, likelihood_nn, posterior_nn
from sbi.utils import BoxUniform, RestrictedPrior, get_density_thresholder

from sbi_rounds import stages
from sbi_rounds.cluster import open_client
from sbi_rounds.config import RunConfig
from sbi_rounds.diagnostics.checks import c2st_sbibm as c2st_accuracy
from sbi_rounds.examples import (
    gaussian_posterior,
    gaussian_prior,
    linear_gaussian,
    quadratic,
    quadratic_posterior_samples,
)
from sbi_rounds.stages.round import run_round
from sbi_rounds.training.trackers import NullTracker

warnings.filterwarnings("ignore")

PROBLEMS = {
    "gaussian": {
        "xobs": [0.5, -0.3],
        "simulator": "sbi_rounds.examples:linear_gaussian",
        "prior": {"path": "sbi_rounds.examples:gaussian_prior"},
    },
    "quadratic": {
        "xobs": [0.5, 0.5],
        "simulator": "sbi_rounds.examples:quadratic",
        "prior": {"low": [-2.0, -2.0], "high": [2.0, 2.0]},
    },
}
NET = {"hidden_features": 50, "num_transforms": 5}
TRAIN = {"batch_size": 200, "learning_rate": 5e-4, "patience": 20}
MCMC = {"num_chains": 20, "thin": 1, "warmup_steps": 50, "init_strategy": "resample"}
QUANTILE, THRESHOLD_SAMPLES = 1e-4, 100_000


def reference(problem: str, n: int) -> torch.Tensor:
    xobs = torch.tensor(PROBLEMS[problem]["xobs"])
    if problem == "gaussian":
        return gaussian_posterior(xobs).sample((n,))
    return quadratic_posterior_samples(xobs, -2.0, 2.0, n, seed=123)


def ours(
    problem: str,
    method: str,
    seed: int,
    rounds: int,
    sims: int,
    samples: int,
    run_dir: Path,
    client: object,
) -> torch.Tensor:
    p = PROBLEMS[problem]
    config = RunConfig(
        xobs=p["xobs"],
        method=method,
        rounds=rounds,
        simulations_per_round=sims,
        simulator={"path": p["simulator"]},
        prior=p["prior"],
        seed=seed,
        run_dir=str(run_dir),
        network={**NET, "model": "resnet" if method == "snre" else "maf"},
        training=TRAIN,
        posterior={"num_samples": samples, **MCMC},
        tsnpe={"quantile": QUANTILE, "num_samples_to_estimate": THRESHOLD_SAMPLES},
        logger={"backend": "none"},
    )
    with stages.run_session(config) as run:
        for r in range(1, rounds + 1):
            run_round(run, r, client, pairplot=False)
        return torch.from_numpy(run.store.read_samples(rounds))


def sbi_loop(
    problem: str, method: str, seed: int, rounds: int, sims: int, samples: int
) -> torch.Tensor:
    """The multi-round loops of sbi's tutorials, with our settings spelled out."""
    torch.manual_seed(seed)
    p = PROBLEMS[problem]
    prior = (
        gaussian_prior()
        if problem == "gaussian"
        else BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    )
    simulator = linear_gaussian if problem == "gaussian" else quadratic
    x_o = torch.tensor(p["xobs"])
    train = {
        "training_batch_size": TRAIN["batch_size"],
        "learning_rate": TRAIN["learning_rate"],
        "stop_after_epochs": TRAIN["patience"],
    }
    kw = {"show_progress_bars": False, "tracker": NullTracker()}
    if method in ("snpe", "tsnpe"):
        inference = NPE(prior, posterior_nn("maf", **NET), **kw)
    elif method == "snle":
        inference = NLE(prior, likelihood_nn("maf", **NET), **kw)
    else:
        inference = NRE(
            prior, classifier_nn("resnet", hidden_features=NET["hidden_features"]), **kw
        )
    proposal = prior
    for _ in range(rounds):
        theta = proposal.sample((sims,))
        x = simulator(theta)
        if method == "snpe":
            estimator = inference.append_simulations(theta, x, proposal=proposal).train(**train)
            posterior = inference.build_posterior(estimator).set_default_x(x_o)
            proposal = posterior
        elif method == "tsnpe":
            inference.append_simulations(theta, x).train(force_first_round_loss=True, **train)
            posterior = inference.build_posterior().set_default_x(x_o)
            accept = get_density_thresholder(
                posterior, quantile=QUANTILE, num_samples_to_estimate_support=THRESHOLD_SAMPLES
            )
            proposal = RestrictedPrior(prior, accept, sample_with="rejection")
        else:
            inference.append_simulations(theta, x).train(**train)
            posterior = inference.build_posterior(
                mcmc_method="slice_np_vectorized", mcmc_parameters=MCMC
            ).set_default_x(x_o)
            proposal = posterior
    try:
        return posterior.sample((samples,), show_progress_bars=False)
    except TypeError:
        return posterior.sample((samples,))


def c2st_sbibm(ref: torch.Tensor, samples: torch.Tensor, seed: int = 1) -> float:
    """sbibm's C2ST, as the run's posterior checks compute it (``sbi_rounds.diagnostics``)."""
    return c2st_accuracy(ref.numpy(), samples.numpy(), seed=seed)["accuracy"]


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of ``a - b`` over seeds and its 95% Student-t interval: ``{mean, low, high, t}``."""
    from scipy.stats import t as student_t

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n, mean = len(diffs), statistics.mean(diffs)
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "t": math.nan}
    se = statistics.stdev(diffs) / math.sqrt(n)
    half = student_t.ppf(0.975, n - 1) * se
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "t": mean / se if se > 0 else math.copysign(math.inf, mean),
    }


def verdict(interval: dict[str, float]) -> str:
    """``worse`` / ``better`` when the 95% interval of ``ours - other`` excludes 0."""
    if interval["low"] > 0:
        return "worse"
    if interval["high"] < 0:
        return "better"
    return "no difference"


def summarize(results: list[dict]) -> str:
    """A markdown table: per cell, the means and the paired difference with its interval."""
    cells: dict[tuple[str, str], dict[int, dict]] = {}
    for row in results:
        cells.setdefault((row["problem"], row["method"]), {})[row["seed"]] = row
    lines = [
        "| problem | method | seeds | mean ours | mean sbi loop | ours - sbi [95% CI] | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for (problem, method), by_seed in cells.items():
        seeds = sorted(by_seed)
        ours_ = [by_seed[s]["c2st_ours"] for s in seeds]
        sbi_ = [by_seed[s]["c2st_sbi"] for s in seeds]
        d = paired(ours_, sbi_)
        lines.append(
            f"| {problem} | {method.upper()} | {len(seeds)} | "
            f"{statistics.mean(ours_):.3f} | {statistics.mean(sbi_):.3f} | "
            f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {verdict(d)} |"
        )
    lines += ["", "| problem | TSNPE - SNPE (ours) [95% CI] | verdict |", "| --- | ---: | --- |"]
    for problem in dict.fromkeys(p for p, _ in cells):
        snpe, tsnpe = cells.get((problem, "snpe")), cells.get((problem, "tsnpe"))
        if not snpe or not tsnpe:
            continue
        seeds = sorted(set(snpe) & set(tsnpe))
        d = paired([tsnpe[s]["c2st_ours"] for s in seeds], [snpe[s]["c2st_ours"] for s in seeds])
        lines.append(
            f"| {problem} | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {verdict(d)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--methods", nargs="+", default=["snpe", "tsnpe", "snle", "snre"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--summarize",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSON",
        help="print the table of earlier results (their --out files; a seed in two "
        "files counts once, from the later file); run nothing",
    )
    args = parser.parse_args()
    if args.summarize:
        rows = [row for path in args.summarize for row in json.loads(path.read_text())]
        print(summarize(rows))
        return
    from sbi_rounds.config import ClusterConfig

    results = []
    with tempfile.TemporaryDirectory() as tmp, open_client(ClusterConfig(workers=2)) as client:
        for problem in args.problems:
            ref = reference(problem, args.samples)
            for method in args.methods:
                for seed in args.seeds:
                    t0 = time.perf_counter()
                    a = ours(
                        problem,
                        method,
                        seed,
                        args.rounds,
                        args.simulations,
                        args.samples,
                        Path(tmp) / f"{problem}-{method}-{seed}",
                        client,
                    )
                    t1 = time.perf_counter()
                    b = sbi_loop(problem, method, seed, args.rounds, args.simulations, args.samples)
                    t2 = time.perf_counter()
                    row = {
                        "problem": problem,
                        "method": method,
                        "seed": seed,
                        "c2st_ours": c2st_sbibm(ref, a),
                        "c2st_sbi": c2st_sbibm(ref, b),
                        "seconds_ours": t1 - t0,
                        "seconds_sbi": t2 - t1,
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print(summarize(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
