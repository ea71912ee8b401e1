"""Crash-safety overhead: time spent committing to the HDF5 run file per round, fsync on and off.

Measured in one run, in one process, on one Dask cluster: the same multi-round SNPE run
(``sbi_rounds.stages``, as the flow chains them) with durable commits (the default:
``fsync`` of the file after every commit, and of the directory after every copy-on-write
replace) and with ``RunStore(durable=False)``, the one safety option that can be switched
off (without it a killed process still loses nothing; a power loss or an OS crash may).
Runs alternate between the two so drifts in machine load hit both alike.

Per round the stages record their wall time and, separately, the part of it spent
committing (``RunStore.commit_seconds``: copy-on-write commits, in-place writes and their
fsyncs); the overhead is commit time / the round's total. The simulator is the instant
``linear_gaussian`` model, so the denominator holds no simulation cost: the fractions are
upper bounds for any real simulator.

    python benchmarks/bench_commit_overhead.py                 # 3 rounds x 1000, 2 repeats
    python benchmarks/bench_commit_overhead.py --repeats 3 --json out.json
    python benchmarks/bench_commit_overhead.py --seconds-per-simulation 0.01   # a real cost
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_rounds import stages
from sbi_rounds.cluster import open_client
from sbi_rounds.config import ClusterConfig, RunConfig
from sbi_rounds.stages.round import run_round
from sbi_rounds.store import TIMED_STAGES, RunStore

STAGES = TIMED_STAGES[:-1]  # every stage but the commit slot itself


def _config(directory: Path, run_id: str, args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        xobs=[0.5, -0.3],
        rounds=args.rounds,
        simulations_per_round=args.simulations,
        run_dir=str(directory),
        run_id=run_id,
        training={"max_epochs": args.max_epochs},
        logger={"backend": "none"},
        cluster={
            "workers": args.workers,
            "chunk_size": args.chunk_size,
            "commit_interval": args.commit_interval,
        },
        simulator=(
            {
                "path": "sbi_rounds.examples:slow_linear_gaussian",
                "kwargs": {"seconds_per_simulation": args.seconds_per_simulation},
            }
            if args.seconds_per_simulation > 0
            else {"path": "sbi_rounds.examples:linear_gaussian"}
        ),
    )


class _TimedStore(RunStore):
    """The run store, adding up its commit time by the store method that committed."""

    def __init__(self, path: Path, durable: bool) -> None:
        super().__init__(path, durable=durable)
        self.by_method: Counter[str] = Counter()

    def _timed(self, inner: Any) -> Iterator[h5py.File]:
        # Frames: this generator, contextmanager's __enter__, the store method.
        caller = sys._getframe(3).f_code.co_name
        if caller in ("_structural", "_in_place", "__enter__"):
            caller = sys._getframe(5).f_code.co_name
        t0 = time.perf_counter()
        with inner() as f:
            yield f
        self.by_method[caller] += time.perf_counter() - t0

    @contextmanager
    def _structural(self) -> Iterator[h5py.File]:
        yield from self._timed(super()._structural)

    @contextmanager
    def _in_place(self, *args: Any, **kwargs: Any) -> Iterator[h5py.File]:
        yield from self._timed(lambda: super(_TimedStore, self)._in_place(*args, **kwargs))

    def _new_bulk_file(self, *args: Any, **kwargs: Any) -> None:
        caller = sys._getframe(1).f_code.co_name  # plan_round, _allocate_x
        t0 = time.perf_counter()
        super()._new_bulk_file(*args, **kwargs)
        self.by_method[caller] += time.perf_counter() - t0


def one_run(
    directory: Path, run_id: str, durable: bool, client: Any, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """A whole run; returns one row per round."""
    config = _config(directory, run_id, args)
    rows = []
    with stages.run_session(config) as run:
        # The same run with the store's durability set (the lock is held meanwhile).
        store = _TimedStore(run.store.path, durable=durable)
        run = dataclasses.replace(run, store=store)
        for r in range(1, config.rounds + 1):
            store.by_method.clear()
            t0 = time.perf_counter()
            run_round(run, r, client, pairplot=not args.no_pairplot)
            wall = time.perf_counter() - t0
            timings = run.store.timings(r).by_stage()
            total = sum(timings[s] for s in STAGES)
            info = run.store.round_info(r)
            rows.append(
                {
                    "durable": durable,
                    "round": r,
                    "wall_s": wall,
                    "stages_s": total,
                    "commit_s": timings["commit"],
                    "fraction": timings["commit"] / total,
                    "chunks": info.num_chunks,
                    "file_mb": run.store.path.stat().st_size / 1e6,
                    **{f"{s}_s": timings[s] for s in STAGES},
                    "commit_by_method_s": dict(store.by_method),
                }
            )
    return rows


def structural_commit_seconds(path: Path, durable: bool, repeats: int = 5) -> float:
    """Median time of one copy-on-write commit (a round record) of the file at ``path``."""
    store = RunStore(path, durable=durable)
    times = []
    for i in range(repeats):
        before = store.commit_seconds
        store.write_seconds_per_simulation(1, 0.01 * i)
        times.append(store.commit_seconds - before)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--simulations", type=int, default=1000)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--chunk-size",
        default="auto",
        type=lambda v: v if v in ("auto", "measure") else int(v),
        help="cluster.chunk_size (default auto: N / 64)",
    )
    p.add_argument(
        "--commit-interval",
        type=float,
        default=0.5,
        help="cluster.commit_interval (default 0.5 s; 0: a commit per chunk)",
    )
    p.add_argument(
        "--seconds-per-simulation",
        type=float,
        default=0.0,
        help="CPU-bound simulator cost (slow_linear_gaussian); 0: instant",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-pairplot", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    probes: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-commit-") as tmp,
        open_client(ClusterConfig(workers=args.workers)) as client,
    ):
        directory = Path(tmp)
        for rep in range(args.repeats):
            order = (True, False) if rep % 2 == 0 else (False, True)
            for durable in order:
                name = f"{'durable' if durable else 'nofsync'}-{rep}"
                rows += [
                    dict(row, repeat=rep) for row in one_run(directory, name, durable, client, args)
                ]
                print(
                    f"{name}: {sum(r['commit_s'] for r in rows[-args.rounds :]):.3f} s committing",
                    flush=True,
                )
        last = directory / f"durable-{args.repeats - 1}" / "run.h5"
        size = last.stat().st_size / 1e6
        for durable in (True, False):
            probes["durable" if durable else "nofsync"] = structural_commit_seconds(last, durable)
    summary = _summary(rows, args)
    print(_markdown(summary, probes, size))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "load_average": os.getloadavg(),
                    },
                    "settings": vars(args) | {"json": str(args.json)},
                    "rows": rows,
                    "summary": summary,
                    "structural_commit_s": probes,
                    "file_mb": size,
                },
                indent=1,
            )
        )
    return 0


def _summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for durable in (True, False):
        for r in range(1, args.rounds + 1):
            sel = [x for x in rows if x["durable"] == durable and x["round"] == r]
            out.append(
                {
                    "durable": durable,
                    "round": r,
                    "wall_s": float(np.median([x["wall_s"] for x in sel])),
                    "commit_s": float(np.median([x["commit_s"] for x in sel])),
                    "fraction": float(np.median([x["fraction"] for x in sel])),
                    "fraction_max": float(np.max([x["fraction"] for x in sel])),
                    "chunks": sel[0]["chunks"],
                    "file_mb": sel[0]["file_mb"],
                    "train_s": float(np.median([x["train_s"] for x in sel])),
                    "commit_by_method_s": {
                        m: float(np.median([x["commit_by_method_s"].get(m, 0.0) for x in sel]))
                        for m in sorted({m for x in sel for m in x["commit_by_method_s"]})
                    },
                }
            )
    return out


def _markdown(summary: list[dict[str, Any]], probes: dict[str, float], size: float) -> str:
    lines = [
        "| commits | round | round s | committing s | share of round (median, max) | chunks "
        "| file MB | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summary:
        lines.append(
            f"| {'fsync (default)' if s['durable'] else 'no fsync'} | {s['round']} | "
            f"{s['wall_s']:.2f} | {s['commit_s']:.3f} | {100 * s['fraction']:.2f}% "
            f"({100 * s['fraction_max']:.2f}%) | {s['chunks']} | {s['file_mb']:.2f} | "
            f"{s['train_s']:.2f} |"
        )
    lines += [
        "",
        "Committing by store method (median seconds per round, fsync):",
        "",
        "| method | " + " | ".join(f"round {s['round']}" for s in summary if s["durable"]) + " |",
        "| --- |" + " ---: |" * sum(s["durable"] for s in summary),
    ]
    durable = [s for s in summary if s["durable"]]
    methods = sorted(
        {m for s in durable for m in s["commit_by_method_s"]},
        key=lambda m: -sum(s["commit_by_method_s"].get(m, 0) for s in durable),
    )
    for m in methods:
        lines.append(
            f"| `{m}` | "
            + " | ".join(f"{s['commit_by_method_s'].get(m, 0.0):.3f}" for s in durable)
            + " |"
        )
    lines.append("")
    lines.append(
        f"One copy-on-write commit of the {size:.2f} MB file: "
        f"{1000 * probes['durable']:.1f} ms with fsync, {1000 * probes['nofsync']:.1f} ms "
        "without."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
