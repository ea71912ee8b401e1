"""One round of 10^6 instant simulations on 2 workers: orchestration cost and peak memory.

The round is planned in a ``RunStore`` (format 2), its parameters drawn from the prior and
committed, then simulated with ``simulate_round`` (chunking, dispatch to a local Dask
cluster, commits, bookkeeping) by the instant, vectorized ``linear_gaussian`` simulator, and
finally read back for training (``read_simulations``). The workers import the simulation
code and the simulator's module first, as the flow has them do while it starts (see
``flows/cluster.py``); that warm-up is timed apart, as imports are not orchestration.
Reported: seconds per stage and per simulation, the Dask tasks the chunks went in, and the
driver's peak resident memory against the round's arrays.

    python benchmarks/bench_million.py --simulations 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

from sbi_rounds.builders.priors import build_prior
from sbi_rounds.cluster import open_client
from sbi_rounds.config import ClusterConfig, RunConfig
from sbi_rounds.simulation import choose_chunk_size, simulate_round
from sbi_rounds.store import RunStore


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--simulations", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-size", default="auto")
    p.add_argument("--max-in-flight", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    chunk = args.chunk_size if args.chunk_size == "auto" else int(args.chunk_size)
    config = RunConfig(
        xobs=[0.5, -0.3],
        cluster={"workers": args.workers, "chunk_size": chunk, "max_in_flight": args.max_in_flight},
    )
    n = args.simulations
    out: dict[str, float] = {"simulations": n, "peak_mb_at_start": _peak_mb()}
    with tempfile.TemporaryDirectory() as tmp, open_client(config.cluster) as client:
        t0 = time.perf_counter()
        for module in ("sbi_rounds.simulation", "sbi_rounds.examples"):
            client.run(importlib.import_module, module)
        out["worker_warm_up_s"] = time.perf_counter() - t0
        store = RunStore.create(Path(tmp) / "run.h5", config={}, fingerprint="bench")
        t0 = time.perf_counter()
        size = choose_chunk_size(config.cluster, n)
        store.plan_round(
            1,
            num_simulations=n,
            theta_dim=2,
            x_dim=2,
            chunk_size=size,
            num_posterior_samples=1000,
            proposal={"kind": "prior"},
        )
        theta = build_prior(config.prior).sample((n,)).numpy()
        store.write_theta(1, 0, theta)
        del theta
        out["plan_and_sample_s"] = time.perf_counter() - t0
        t0, first = time.perf_counter(), []
        with store.held_open():
            report = simulate_round(
                store,
                1,
                simulator=config.simulator,
                cluster=ClusterConfig(**{**config.cluster.model_dump(), "chunk_size": size}),
                client=client,
                run_seed=0,
                progress=lambda *_: first or first.append(time.perf_counter()),
            )
        out["simulate_s"] = time.perf_counter() - t0
        out["chunks"] = report.chunks_run
        out["tasks"] = report.tasks
        out["first_commit_s"] = first[0] - t0 if first else math.nan
        out["chunk_size"] = size
        out["commit_s"] = store.commit_seconds
        t0 = time.perf_counter()
        theta, x, valid = store.read_simulations(1)
        out["read_back_s"] = time.perf_counter() - t0
        out["round_arrays_mb"] = (theta.nbytes + x.nbytes + valid.nbytes) / 1e6
        out["valid"] = int(valid.sum())
    out["us_per_simulation"] = out["simulate_s"] / n * 1e6
    out["peak_mb"] = _peak_mb()
    for key, value in out.items():
        print(f"{key:>22}: {value:,.3f}" if isinstance(value, float) else f"{key:>22}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
