"""Issue 40's measurement: a campaign's simulations reused, against separate runs.

A cell is (problem, budget, method, mode, seed): one whole 10-observation campaign
(``sbi-rounds campaign``, one child process, timed whole) on sbibm's ``two_moons`` or
``slcp`` (observations 1-10, ``bench_sbibm``'s data and reference samples), at ``3x1000``
or ``10x100``, with SNPE or SNLE. Modes:

- ``separate``: the campaign as it always ran, each observation a separate run's result;
- ``shared``: ``--campaign.shared-first-round``, the prior round simulated once;
- ``pooled``: pooled training for SNLE/SNRE (issue 40 item 2) is not implemented yet; the
  mode is listed and refused, so that its cells are added once it is.

Each cell records the simulations the campaign ran (every run's rounds, the shared run's
round once, imported rounds not counted again), its wall time, and the C2ST of 10,000
samples of each observation's last posterior against sbibm's reference, with their mean.
Predictive and calibration checks are off in every mode (their simulations are not the
inference's). Every finished cell is appended to ``--out`` as one JSON line and cells
already there are skipped: the benchmark resumes per cell (and a campaign stopped
mid-cell resumes from its own run files when ``--runs`` keeps them). ``--list`` prints the
cells; ``--summarize`` prints the table. Goal (issue 40): the same mean C2ST (within 0.02)
with at least 30% fewer simulations at 3x1000, or a better C2ST at the same count.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_matrix import (  # noqa: E402
    PROBLEMS,
    CellFailed,
    _draw,
    _run_child,
    machine,
    observation_of,
    parse_budget,
    score,
    versions,
)
from bench_sbibm import NUM_SAMPLES  # noqa: E402

BENCH_PROBLEMS = ("two_moons", "slcp")
BUDGETS = ("3x1000", "10x100")
METHODS = ("snpe", "snle")
MODES = ("separate", "shared", "pooled")
IMPLEMENTED = ("separate", "shared")
OBSERVATIONS = tuple(range(1, 11))


@dataclass(frozen=True)
class Cell:
    """One campaign of the benchmark."""

    problem: str
    budget: str
    method: str
    mode: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.problem}-{self.budget}-{self.method}-{self.mode}-s{self.seed}"


def cells(args: argparse.Namespace) -> list[Cell]:
    """The selected cells, in the order they run."""
    product = itertools.product(args.problems, args.budgets, args.methods, args.modes, args.seeds)
    return [Cell(*c) for c in product]


def done_names(out: Path) -> set[str]:
    """The cells ``out`` holds already (the resume)."""
    if not out.exists():
        return set()
    return {Cell(**{k: r[k] for k in asdict(Cell("", "", "", "", 0))}).name for r in _rows(out)}


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def campaign_command(cell: Cell, table: Path, directory: Path) -> list[str]:
    """The campaign's command line for the cell."""
    rounds, sims = parse_budget(cell.budget)
    problem = PROBLEMS[cell.problem]
    argv = [sys.executable, "-m", "flows.cli.main", "campaign", "--observations", str(table)]
    argv += ["--campaign-dir", str(directory), "--method", cell.method, "--rounds", str(rounds)]
    argv += ["--simulations-per-round", str(sims), "--seed", str(cell.seed)]
    argv += ["--simulator", problem.simulator, "--no-progress", "--logger", "none"]
    argv += ["--predictive-simulations", "0", "--calibration-simulations", "0"]
    if problem.prior_path is not None:
        argv += ["--prior", problem.prior_path]
    else:
        argv += ["--low", *map(repr, problem.low), "--high", *map(repr, problem.high)]
    if cell.mode == "shared":
        argv.append("--campaign.shared-first-round")
    return argv


def simulations_run(directory: Path) -> int:
    """Simulations of every run of the campaign, imported rounds not counted again."""
    from sbi_rounds.store import RunStore

    total = 0
    for path in sorted(directory.glob("*/run.h5")):
        store = RunStore.open(path)
        for r in store.rounds():
            info = store.round_info(r)
            if "imported" not in info.proposal:
                total += info.num_simulations
    return total


def run_cell(cell: Cell, *, data: Path, runs: Path, observations: Sequence[int]) -> dict[str, Any]:
    """Run one campaign (resuming its run files if a stopped one left them) and score it."""
    import numpy as np
    import torch

    from sbi_rounds import load_posterior

    if cell.mode not in IMPLEMENTED:
        raise CellFailed(f"mode {cell.mode!r} is not implemented yet (issue 40 item 2)")
    workdir = runs / cell.name
    workdir.mkdir(parents=True, exist_ok=True)
    pairs = [observation_of(cell.problem, n, data) for n in observations]
    table = workdir / "observations.npy"
    np.save(table, np.asarray([xobs for xobs, _ in pairs], dtype=np.float64))
    host = machine()
    seconds = _run_child(campaign_command(cell, table, workdir / "campaign"), workdir, None)
    c2st = []
    for i, (xobs, reference) in enumerate(pairs):
        posterior = load_posterior(workdir / "campaign" / f"obs-{i:04d}" / "run.h5", round=-1)
        torch.manual_seed(cell.seed)
        samples = _draw(posterior, NUM_SAMPLES)
        c2st.append(score(cell.problem, samples, xobs, reference)["c2st"])
    return {
        **asdict(cell),
        "observations": list(observations),
        "simulations": simulations_run(workdir / "campaign"),
        "seconds": round(seconds, 3),
        "c2st": c2st,
        "mean_c2st": round(statistics.fmean(c2st), 5),
        "versions": versions(),
        "machine": host,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def summarize(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: per problem, budget and method, each mode's simulations, time and
    mean C2ST, and the goal's verdict for ``shared`` against ``separate``."""
    lines = [
        "| problem | budget | method | mode | simulations | seconds | mean C2ST | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["problem"], r["budget"], r["method"], r["mode"], r["seed"]): r for r in rows}
    for (problem, budget, method, mode, seed), row in sorted(by_key.items()):
        base = by_key.get((problem, budget, method, "separate", seed))
        goal = "-"
        if mode != "separate" and base is not None:
            fewer = 1 - row["simulations"] / base["simulations"]
            close = row["mean_c2st"] <= base["mean_c2st"] + 0.02
            goal = f"{fewer:.0%} fewer, C2ST {'within 0.02' if close else 'worse'}"
        lines.append(
            f"| {problem} | {budget} | {method} | {mode} | {row['simulations']} | "
            f"{row['seconds']:.0f} | {row['mean_c2st']:.3f} | {goal} |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", nargs="+", default=list(BENCH_PROBLEMS), choices=PROBLEMS)
    p.add_argument("--budgets", nargs="+", default=list(BUDGETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--modes", nargs="+", default=list(IMPLEMENTED), choices=MODES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--observations", nargs="+", type=int, default=list(OBSERVATIONS))
    p.add_argument("--data", type=Path, default=HERE / "out" / "sbibm", help="sbibm's files")
    p.add_argument("--runs", type=Path, default=HERE / "out" / "reuse", help="campaign dirs")
    p.add_argument("--out", type=Path, default=HERE / "results" / "reuse.jsonl")
    p.add_argument("--list", action="store_true", help="print the cells, run nothing")
    p.add_argument("--summarize", action="store_true", help="print the table of --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for budget in args.budgets:
        parse_budget(budget)
    if args.summarize:
        print(summarize(_rows(args.out) if args.out.exists() else []))
        return 0
    done = done_names(args.out)
    todo = [c for c in cells(args) if c.name not in done]
    if args.list:
        print("\n".join(f"{c.name}{'' if c.name not in done else ' (done)'}" for c in todo))
        return 0
    failed = 0
    for cell in todo:
        print(f"{cell.name}: running", flush=True)
        try:
            row = run_cell(cell, data=args.data, runs=args.runs, observations=args.observations)
        except CellFailed as e:
            print(f"{cell.name}: failed: {e}", file=sys.stderr, flush=True)
            failed += 1
            continue
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:  # each cell as it finishes
            f.write(json.dumps(row) + "\n")
        print(f"{cell.name}: {row['simulations']} simulations, mean C2ST {row['mean_c2st']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
