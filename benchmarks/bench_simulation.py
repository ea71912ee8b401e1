"""Simulation throughput: sbi-rounds on Dask against sbi's ``simulate_for_sbi`` and a serial loop.

Measured in one run, for 1, 2, 4, ... workers (up to ``--max-workers``, default the CPU
count), with a CPU-bound simulator (``sbi_rounds.examples:slow_linear_gaussian``, pure
Python busy work holding the GIL, ``--seconds-per-simulation`` each):

* serial: the simulator called chunk by chunk in this process (the efficiency baseline).
* sbi-rounds: ``simulate_round`` on a local Dask cluster of W one-thread worker processes,
  committing every chunk to a real HDF5 run file (durable: fsync per commit). The
  cluster's start is timed separately and not included.
* sbi joblib: ``sbi.inference.simulate_for_sbi(..., num_workers=W)`` with the same batch
  size as our chunks, after a warm-up call that starts joblib's process pool.

Then the per-chunk overhead with a near-free simulator (``linear_gaussian``, one
simulation per chunk), with durable and non-durable commits.

    python benchmarks/bench_simulation.py                 # prints a Markdown table
    python benchmarks/bench_simulation.py --max-workers 16 --simulations 2000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_rounds.cluster import open_client
from sbi_rounds.config import ClusterConfig, SimulatorConfig
from sbi_rounds.seeding import derive_seed
from sbi_rounds.simulation import call_simulator, choose_chunk_size, simulate_round
from sbi_rounds.store import RunStore

SLOW = "sbi_rounds.examples:slow_linear_gaussian"
FREE = "sbi_rounds.examples:linear_gaussian"


def _store(directory: Path, theta: np.ndarray, chunk_size: int, durable: bool = True) -> RunStore:
    store = RunStore.create(
        directory / f"run-{time.time_ns()}.h5", config={}, fingerprint="bench", durable=durable
    )
    store.plan_round(
        1,
        num_simulations=len(theta),
        theta_dim=theta.shape[1],
        x_dim=theta.shape[1],
        chunk_size=chunk_size,
        num_posterior_samples=1,
        proposal={"kind": "bench"},
    )
    store.write_theta(1, 0, theta)
    return store


def _worker_counts(max_workers: int) -> list[int]:
    counts, w = [], 1
    while w < max_workers:
        counts.append(w)
        w *= 2
    return counts + [max_workers]


def _serial(sim: SimulatorConfig, theta: np.ndarray, chunk: int) -> float:
    t0 = time.perf_counter()
    for c, start in enumerate(range(0, len(theta), chunk)):
        call_simulator(
            sim, theta[start : start + chunk], derive_seed(0, 1, "simulate", c), theta.shape[1]
        )
    return time.perf_counter() - t0


def _ours(
    client: Any,
    cluster: ClusterConfig,
    sim: SimulatorConfig,
    theta: np.ndarray,
    chunk: int,
    directory: Path,
    durable: bool = True,
) -> float:
    store = _store(directory, theta, chunk, durable=durable)
    report = simulate_round(store, 1, simulator=sim, cluster=cluster, client=client, run_seed=0)
    assert report.simulations_run == len(theta)
    return report.seconds


def _sbi(sim_seconds: float, theta: np.ndarray, workers: int, chunk: int) -> float:
    from sbi.inference import simulate_for_sbi

    from sbi_rounds.examples import slow_linear_gaussian

    class _Fixed:  # a "proposal" that returns our parameters, so both do the same work
        def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
            return torch.from_numpy(theta[: shape[0]])

    def simulator(t: Any) -> torch.Tensor:
        return slow_linear_gaussian(t, seconds_per_simulation=sim_seconds)

    simulate_for_sbi(
        simulator,
        _Fixed(),
        num_simulations=2 * workers,
        num_workers=workers,
        simulation_batch_size=1,
        show_progress_bar=False,
    )  # start the pool
    t0 = time.perf_counter()
    _, x = simulate_for_sbi(
        simulator,
        _Fixed(),
        num_simulations=len(theta),
        num_workers=workers,
        simulation_batch_size=chunk,
        show_progress_bar=False,
    )
    assert x.shape[0] == len(theta)
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement; returns the figures."""
    rng = np.random.default_rng(0)
    theta = rng.uniform(-2, 2, (args.simulations, 2)).astype(np.float32)
    cfg = ClusterConfig(
        chunk_size=args.chunk_size if args.chunk_size == "auto" else int(args.chunk_size)
    )
    chunk = choose_chunk_size(cfg, args.simulations)
    slow = SimulatorConfig(path=SLOW, kwargs={"seconds_per_simulation": args.seconds})
    free = SimulatorConfig(path=FREE)
    out: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "simulations": args.simulations,
        "seconds_per_simulation": args.seconds,
        "chunk_size": chunk,
        "repeats": args.repeats,
        "throughput": [],
        "overhead": [],
    }
    call_simulator(slow, theta[:2], 0, 2)  # import and warm up here
    serial = min(_serial(slow, theta, chunk) for _ in range(args.repeats))
    out["serial_seconds"] = serial
    print(f"serial: {serial:.2f} s ({args.simulations / serial:.1f} sims/s)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        directory = Path(tmp)
        for w in _worker_counts(args.max_workers):
            cluster = ClusterConfig(workers=w, chunk_size=chunk)
            t0 = time.perf_counter()
            with open_client(cluster) as client:
                startup = time.perf_counter() - t0
                _ours(client, cluster, slow, theta[: 4 * w * chunk], chunk, directory)  # warm
                ours = min(
                    _ours(client, cluster, slow, theta, chunk, directory)
                    for _ in range(args.repeats)
                )
                overhead = {}
                if not args.skip_overhead:
                    m = args.overhead_chunks
                    for durable in (True, False):
                        seconds = min(
                            _ours(client, cluster, free, theta[:m], 1, directory, durable=durable)
                            for _ in range(args.repeats)
                        )
                        overhead["durable" if durable else "not_durable"] = seconds / m
            sbi = min(_sbi(args.seconds, theta, w, chunk) for _ in range(args.repeats))
            row = {
                "workers": w,
                "cluster_start_s": startup,
                "sbi_rounds_s": ours,
                "sbi_s": sbi,
                "sbi_rounds_sims_per_s": args.simulations / ours,
                "sbi_sims_per_s": args.simulations / sbi,
                "sbi_rounds_efficiency": serial / ours / w,
                "sbi_efficiency": serial / sbi / w,
            }
            out["throughput"].append(row)
            if overhead:
                out["overhead"].append({"workers": w, **{k: v for k, v in overhead.items()}})
            print(
                f"W={w}: sbi-rounds {ours:.2f} s, sbi {sbi:.2f} s, overhead {overhead}",
                file=sys.stderr,
            )
    return out


def markdown(res: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    lines = [
        f"{res['simulations']} simulations of {1000 * res['seconds_per_simulation']:.0f} ms "
        f"(CPU-bound), chunks of {res['chunk_size']}, best of {res['repeats']}; "
        f"{res['machine']['cpus']} CPUs, load average at start "
        f"{res['machine']['load_average'][0]:.1f}. Serial loop: {res['serial_seconds']:.2f} s "
        f"({res['simulations'] / res['serial_seconds']:.1f} sims/s).",
        "",
        "| workers | sbi-rounds sims/s | efficiency | sbi joblib sims/s | efficiency | "
        "sbi-rounds / joblib | cluster start s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["throughput"]:
        lines.append(
            f"| {r['workers']} | {r['sbi_rounds_sims_per_s']:.1f} | "
            f"{100 * r['sbi_rounds_efficiency']:.0f}% | {r['sbi_sims_per_s']:.1f} | "
            f"{100 * r['sbi_efficiency']:.0f}% | {r['sbi_s'] / r['sbi_rounds_s']:.2f}x | "
            f"{r['cluster_start_s']:.1f} |"
        )
    if res["overhead"]:
        lines += [
            "",
            "Per-chunk overhead (near-free simulator, one simulation per chunk):",
            "",
            "| workers | ms per chunk, durable commits | ms per chunk, no fsync |",
            "| ---: | ---: | ---: |",
        ]
        for r in res["overhead"]:
            lines.append(
                f"| {r['workers']} | {1000 * r['durable']:.1f} | {1000 * r['not_durable']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--simulations", type=int, default=640)
    p.add_argument("--seconds-per-simulation", dest="seconds", type=float, default=0.02)
    p.add_argument("--chunk-size", default="auto", help="a number, or auto (N/64)")
    p.add_argument("--repeats", type=int, default=2, help="best of this many")
    p.add_argument("--overhead-chunks", type=int, default=300)
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    res = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
