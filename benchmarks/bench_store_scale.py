"""Run store scaling: each kind of commit timed in a small and a large run, disk, resume.

Builds a run of ``--size`` bytes of simulations with ``RunStore`` alone (no training, no
Dask): rounds of ``--rows-per-round`` simulations of ``--x-dim`` float32 summaries, planned
and filled chunk by chunk as the simulate stage does, with their simulations sealed. Then,
in that run, every kind of commit is timed (median of ``--repeats``, durable: with fsync):

* ``chunk``: one chunk of ``--chunk-rows`` rows into the last round (in place, held open);
* ``stage``: a round's stage mark (in place);
* ``network``: a trained network's weights, history and summary (copy-on-write);
* ``checkpoint``: a training checkpoint (weights, optimizer state; copy-on-write);
* ``round record``: a round's diagnostics record (copy-on-write);
* ``plan``: planning a round of ``--chunk-rows`` simulations (its bulk file made, linked).

Disk: the run directory's allocated bytes against the data it holds, and its peak during a
copy-on-write commit (sampled at the instant the new run file is complete, before it
replaces the old one). Resume: opening the run, reading its settings and finding the pending
work (stages, pending chunks); the start-up check every session runs (``check_intact``: the
run file whole, and of the round files only what changed since their datasets were sealed);
and, for comparison, ``verify``, which reads every byte.

    python benchmarks/bench_store_scale.py --size 1e6 --size 4e9 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_rounds.store import (
    SIMULATIONS,
    RoundDiagnostics,
    RunStore,
    Stage,
    TrainedNetwork,
    TrainingSummaryRecord,
)
from sbi_rounds.store.files import StoreFile
from sbi_rounds.store.schema import C2st, NetworkArchitecture

KINDS = ("chunk", "stage", "network", "checkpoint", "round record", "plan")


def _allocated(directory: Path) -> int:
    """Bytes the files in ``directory`` occupy on disk."""
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir() if p.is_file())


class _DiskProbe:
    """Samples the run directory's disk use when a copy-on-write commit's new file is done."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.peak = directory, 0
        self._publish = StoreFile._publish

    def __enter__(self) -> _DiskProbe:
        probe = self

        def publish(store: StoreFile, tmp: Path) -> None:
            probe.peak = max(probe.peak, _allocated(probe.directory))
            probe._publish(store, tmp)

        StoreFile._publish = publish  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        StoreFile._publish = self._publish  # type: ignore[method-assign]


def _plan(store: RunStore, round_: int, rows: int, args: argparse.Namespace) -> None:
    store.plan_round(
        round_,
        num_simulations=rows,
        theta_dim=args.theta_dim,
        x_dim=args.x_dim,
        chunk_size=args.chunk_rows,
        num_posterior_samples=1000,
        proposal={"kind": "prior"},
    )


def build(directory: Path, size: float, args: argparse.Namespace) -> tuple[RunStore, int]:
    """A run holding about ``size`` bytes of simulations; returns it and its rounds."""
    row = 4 * (args.theta_dim + args.x_dim) + 1
    total = max(args.chunk_rows, int(size / row))
    rounds = max(1, math.ceil(total / args.rows_per_round))
    store = RunStore.create(directory / "run.h5", config={"bench": True}, fingerprint="bench")
    rng = np.random.default_rng(0)
    block = rng.normal(size=(args.chunk_rows, args.x_dim)).astype(np.float32)
    for r in range(1, rounds + 1):
        rows = min(args.rows_per_round, total - (r - 1) * args.rows_per_round)
        _plan(store, r, rows, args)
        store.write_theta(r, 0, rng.uniform(size=(rows, args.theta_dim)))
        info = store.round_info(r)
        todo = range(info.num_chunks if r < rounds else info.num_chunks - 1)
        with store.held_open():  # committed 50 chunks at a time, as chunks finishing together
            for first in range(0, len(todo), 50):
                batch = [(c, *info.chunk_bounds(c)) for c in todo[first : first + 50]]
                store.write_chunks(r, [(c, block[: b - a], 0.1) for c, a, b in batch])
        if r < rounds:
            store.set_stage(r, Stage.SIMULATED)
            store.seal(r, SIMULATIONS)
            store.set_stage(r, Stage.DONE)
    os.sync()
    return store, rounds


def _network(width: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(width, width, generator=g) for i in range(4)}


def time_commits(store: RunStore, rounds: int, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of each kind of commit in the run ``store``."""
    weights = _network(args.network_width)
    last = rounds
    info = store.round_info(last)
    a, b = info.chunk_bounds(info.num_chunks - 1)
    block = np.ones((b - a, args.x_dim), dtype=np.float32)
    extra = iter(range(rounds + 1, rounds + 10_000))
    commits: dict[str, Callable[[], Any]] = {
        "chunk": lambda: store.write_chunk(last, info.num_chunks - 1, block, 0.1),
        "stage": lambda: store.set_stage(last, Stage.SAMPLED),
        "network": lambda: store.write_network(
            last,
            TrainedNetwork(
                weights=weights,
                architecture=NetworkArchitecture(
                    role="posterior",
                    model="maf",
                    hidden_features=50,
                    num_transforms=5,
                    num_bins=10,
                    num_components=10,
                    z_score_theta="independent",
                    z_score_x="independent",
                ),
                history={"loss": list(np.linspace(1, 0, 200))},
                summary=TrainingSummaryRecord(
                    epochs=200,
                    steps=2000,
                    best_val_loss=0.5,
                    best_epoch=180,
                    stop_reason="validation loss did not improve for 20 epochs",
                    elapsed=60.0,
                    resumed_from_epoch=0,
                    training_samples=10_000,
                ),
            ),
        ),
        "checkpoint": lambda: store.save_checkpoint(
            last,
            {"epoch": 3, "model": weights, "optimizer": {k: v * 2 for k, v in weights.items()}},
        ),
        "round record": lambda: store.write_diagnostics(
            last,
            RoundDiagnostics(map=[0.1] * 10, c2st=C2st(accuracy=0.51, samples=1000)),
        ),
        "plan": lambda: _plan(store, next(extra), args.chunk_rows, args),
    }
    out = {}
    for kind, commit in commits.items():
        times = []
        with store.held_open() if kind == "chunk" else _nothing():
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                commit()
                times.append(time.perf_counter() - t0)
        out[kind] = statistics.median(times)
    return out


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def time_resume(path: Path) -> dict[str, float]:
    """Seconds to open the run and find its pending work; to run the start-up check
    (``check_intact``: the run file whole, of the round files what changed since sealed);
    and to verify every byte (``sbi-rounds verify``)."""
    t0 = time.perf_counter()
    store = RunStore.open(path)
    store.read_config()
    store.fingerprint()
    for r in store.rounds():
        if store.stage(r) != Stage.DONE:
            store.round_info(r)
            store.pending_chunks(r)
    found = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.check_intact()
    checked = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert store.verify() == []
    return {
        "find pending work": found,
        "start-up check (check_intact)": checked,
        "verify (reads every byte)": time.perf_counter() - t0,
    }


def measure(size: float, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp) / "run"
        t0 = time.perf_counter()
        store, rounds = build(directory, size, args)
        built = time.perf_counter() - t0
        data = sum(p.stat().st_size for p in directory.iterdir())
        with _DiskProbe(directory) as probe:
            commits = time_commits(store, rounds, args)
        resume = time_resume(store.path)
        return {
            "size_bytes": data,
            "rounds": rounds,
            "run_file_bytes": store.path.stat().st_size,
            "build_seconds": built,
            "commit_seconds": commits,
            "disk_allocated_bytes": _allocated(directory),
            "disk_peak_during_commit_bytes": probe.peak,
            "disk_peak_over_data": probe.peak / data,
            "resume_seconds": resume,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=float, action="append", help="bytes of simulations")
    p.add_argument("--x-dim", type=int, default=500)
    p.add_argument("--theta-dim", type=int, default=5)
    p.add_argument("--rows-per-round", type=int, default=250_000)
    p.add_argument("--chunk-rows", type=int, default=100)
    p.add_argument("--network-width", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dir", default=None, help="where the runs are built (default: tmp)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    results = {}
    for size in args.size or [1e6, 4e9]:
        r = measure(size, args)
        results[f"{size:g}"] = r
        print(
            f"run of {r['size_bytes'] / 1e6:,.1f} MB in {r['rounds']} round(s), run file "
            f"{r['run_file_bytes'] / 1e3:,.0f} kB, built in {r['build_seconds']:.1f} s"
        )
        for kind, s in r["commit_seconds"].items():
            print(f"  {kind:<13} {s * 1e3:8.2f} ms")
        print(f"  disk peak during a commit / data: {r['disk_peak_over_data']:.4f}")
        for what, s in r["resume_seconds"].items():
            print(f"  resume, {what}: {s:.3f} s")
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
