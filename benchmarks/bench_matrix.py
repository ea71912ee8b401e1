"""The matrix of issue 37: our whole command beside sbi's hand loops, problem by problem.

A cell is (problem, budget, method, observation, seed, peer). Problems: the README's main
job (``readme_gaussian``: ``sbi_rounds.examples:linear_gaussian``, box prior [-2, 2]^2,
exact posterior N(x_o, 0.1^2 I) truncated to the box) and sbibm's ``two_moons``, ``slcp``,
``gaussian_linear``, ``bernoulli_glm`` and ``slcp_distractors`` (simulators and priors in
``sbi_rounds.examples``; sbibm is never imported). Budgets are ``ROUNDSxSIMULATIONS``:
``3x1000``, ``10x100`` and ``10x1000`` make the matrix; any other (``2x200``) is a trial.

Peers, each run as a whole child process whose wall time, interpreter start included, is
the cell's ``seconds``:

- ``ours``: ``python -m flows.online`` given only the method, budget, seed, x_o and the
  problem's simulator and prior (readme_gaussian: x_o alone, its defaults are the
  problem), plus ``--set`` overrides as flags. The run's last posterior
  (``sbi_rounds.load_posterior``) then draws 10,000 samples, outside the timed part.
- ``sbi_plain``: the hand loop an sbi user writes (``NPE``/``NLE``/``NRE`` with their
  default estimators, ``train()`` and ``build_posterior()`` with sbi's defaults), run as
  ``python benchmarks/bench_matrix.py --cell-json ...``.
- ``sbi_paper``: the same loop with the networks the sbibm paper used (SNPE and TSNPE: NSF,
  SNLE: MAF, SNRE: the ResNet classifier; sbi's training defaults). It is run only where
  its network differs from ``sbi_plain``'s (SNPE, TSNPE); elsewhere the table reads
  ``sbi_plain``'s cell for it. The hand loop draws its 10,000 samples itself at the end
  and reports how long that took, which is taken off its wall time.

Which cells make the matrix (``matrix_cells``): SNPE, TSNPE, SNLE and SNRE at 3x1000 and
10x100 on observations 1-5 and at 10x1000 on 1-3; TFMPE and TNPSE at 10x1000 on two_moons,
slcp and gaussian_linear (observations 1-3); hand loops on observations 1-3 only, and
never for TFMPE/TNPSE (sbi cannot run them in rounds). ``--problems``, ``--budgets``,
``--methods``, ``--observations``, ``--peers`` and ``--seeds`` narrow it; ``--list``
prints the cells and runs nothing.

``--quick`` is the dozen cells (observation 1; every selected peer) to run while choosing
defaults, ``QUICK``: every problem, budget and method at least once, the README job
first. Hand-loop cells do not depend on ``--set``: they are stored under the label
``default`` whatever ``--label`` says, so a variant (``--set ... --label NAME``) runs only
our command and is compared with the hand loops already measured.

Accuracy: sbibm problems by C2ST of the 10,000 samples against sbibm's reference samples
(``bench_sbibm.c2st``; its data fetching and observations); readme_gaussian by the error
of the samples' mean in units of the exact posterior sd, and the relative error of their
sd, per parameter. Its observation 1 is the README's (0.5, -0.3); 2-5 are draws from the
prior predictive with seed 37 (``readme_observations``).

Targets (``--summarize``): sbibm cells, C2ST of the mean over observations at or below
the sbibm paper's figure for the task, method and budget (``bench_sbibm.PUBLISHED``; at
3x1000, which the paper did not run, the figure interpolated between its 1k and 10k ones
in log simulations; TSNPE on tasks without a TSNPE figure: SNPE's; TFMPE and TNPSE: within
0.03 of our TSNPE's mean in the same cell); readme_gaussian, averaged over observations,
the worst parameter's sd within 10% and its mean within 0.2 sd. Time: our wall time at
most 1.0x the paper-configured hand loop's, and at most 1.0x the plain one's where that one
meets the accuracy target (both over the observations and seeds the two share);
``--startup S`` takes a fixed start-up cost of S seconds off our runs under two minutes in
those verdicts (the issue allows it, stated apart: the ratios shown are the raw ones).

Every finished cell is appended to ``--out`` as one JSON line (accuracy, seconds, our
round table's seconds per stage, versions, machine) and cells already there are skipped:
the matrix resumes, and can be filled over days. A cell that fails is reported and not
written (run again to retry it); the command then exits with status 1.

    python benchmarks/bench_matrix.py --quick
    python benchmarks/bench_matrix.py --quick --peers ours --set training.batch_size=200 \\
        --label batch200
    python benchmarks/bench_matrix.py --problems two_moons slcp --budgets 10x100
    python benchmarks/bench_matrix.py --summarize [--label batch200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_sbibm import NUM_SAMPLES, PUBLISHED, load_rows  # noqa: E402

SBIBM_PROBLEMS = ("two_moons", "slcp", "gaussian_linear", "bernoulli_glm", "slcp_distractors")


@dataclass(frozen=True)
class Problem:
    """A problem of the matrix: its simulator and prior (a box, or a prior factory)."""

    simulator: str
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    prior_path: str | None = None


PROBLEMS: dict[str, Problem] = {
    "readme_gaussian": Problem("sbi_rounds.examples:linear_gaussian", (-2.0,) * 2, (2.0,) * 2),
    "two_moons": Problem("sbi_rounds.examples:two_moons", (-1.0,) * 2, (1.0,) * 2),
    "slcp": Problem("sbi_rounds.examples:slcp", (-3.0,) * 5, (3.0,) * 5),
    "gaussian_linear": Problem(
        "sbi_rounds.examples:gaussian_linear",
        prior_path="sbi_rounds.examples:gaussian_linear_prior",
    ),
    "bernoulli_glm": Problem(
        "sbi_rounds.examples:bernoulli_glm", prior_path="sbi_rounds.examples:bernoulli_glm_prior"
    ),
    "slcp_distractors": Problem("sbi_rounds.examples:slcp_distractors", (-3.0,) * 5, (3.0,) * 5),
}
BUDGETS = ("3x1000", "10x100", "10x1000")
METHODS = ("snpe", "tsnpe", "snle", "snre", "tfmpe", "tnpse")
#: Methods sbi cannot run in rounds: no hand loop.
OURS_ONLY = ("tfmpe", "tnpse")
PEERS = ("ours", "sbi_plain", "sbi_paper")
#: The hand loops' networks: sbi's defaults, and the sbibm paper's.
HAND_NETWORKS = {
    "sbi_plain": {"snpe": "maf", "tsnpe": "maf", "snle": "maf", "snre": "resnet"},
    "sbi_paper": {"snpe": "nsf", "tsnpe": "nsf", "snle": "maf", "snre": "resnet"},
}
OBSERVATIONS = (1, 2, 3, 4, 5)
#: The README job's observation, and the seed of the prior-predictive draws for 2-5.
README_XOBS = (0.5, -0.3)
README_SEED = 37
#: readme_gaussian's targets: |sd / exact sd - 1| and |mean - exact mean| / exact sd.
SD_TOLERANCE, MEAN_TOLERANCE = 0.10, 0.2
#: TFMPE and TNPSE: C2ST within this of our TSNPE's in the same cell.
VECTOR_FIELD_MARGIN = 0.03
#: The dozen cells of ``--quick`` (observation 1): every problem, budget and method.
QUICK = (
    ("readme_gaussian", "3x1000", "snpe"),  # the README job
    ("readme_gaussian", "10x100", "snle"),
    ("two_moons", "10x100", "snpe"),
    ("two_moons", "3x1000", "tsnpe"),
    ("two_moons", "10x1000", "tfmpe"),
    ("slcp", "10x100", "snle"),
    ("slcp", "3x1000", "snre"),
    ("gaussian_linear", "3x1000", "snpe"),
    ("gaussian_linear", "10x1000", "tnpse"),
    ("bernoulli_glm", "10x100", "snpe"),
    ("bernoulli_glm", "3x1000", "snle"),
    ("slcp_distractors", "3x1000", "snpe"),
)
#: The round table's seconds per stage, summed over rounds into a cell's ``stage_s``.
STAGES = ("sample", "simulate", "append", "train", "posterior", "checkpoint", "commit", "checks")


def parse_budget(budget: str) -> tuple[int, int]:
    """``"10x100"`` as (rounds, simulations per round)."""
    rounds, _, sims = budget.partition("x")
    try:
        r, n = int(rounds), int(sims)
    except ValueError:
        raise ValueError(f"budget {budget!r}: give ROUNDSxSIMULATIONS, e.g. 10x100") from None
    if r < 1 or n < 2:
        raise ValueError(f"budget {budget!r}: at least 1 round of 2 simulations")
    return r, n


# --- cells ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One cell of the matrix. ``label`` names our command's settings (hand loops: always
    ``default``, they do not depend on ``--set``)."""

    problem: str
    budget: str
    method: str
    observation: int
    seed: int
    peer: str
    label: str = "default"

    def key(self) -> tuple:
        return row_key(asdict(self))

    @property
    def name(self) -> str:
        """A directory name for the cell's work."""
        name = f"{self.problem}-{self.budget}-{self.method}-{self.observation}-{self.seed}"
        return f"{name}-{self.peer}-{self.label}"


def row_key(row: dict[str, Any]) -> tuple:
    """The identity of a cell or of a row of ``--out``."""
    return tuple(
        row[k] for k in ("problem", "budget", "method", "observation", "seed", "peer", "label")
    )


def in_matrix(problem: str, budget: str, method: str, observation: int, peer: str) -> bool:
    """Whether the issue's matrix has this cell (custom budgets: every method, as a trial)."""
    if peer != "ours" and (method in OURS_ONLY or observation > 3):
        return False
    if (
        peer == "sbi_paper"
        and HAND_NETWORKS["sbi_paper"][method] == (HAND_NETWORKS["sbi_plain"][method])
    ):
        return False  # the same loop as sbi_plain's: the table reads that cell
    if budget not in BUDGETS:
        return True
    if method in OURS_ONLY and (
        budget != "10x1000" or problem not in ("two_moons", "slcp", "gaussian_linear")
    ):
        return False
    return observation <= 3 if budget == "10x1000" else True


def matrix_cells(
    problems: Iterable[str] = tuple(PROBLEMS),
    budgets: Iterable[str] = BUDGETS,
    methods: Iterable[str] = METHODS,
    observations: Iterable[int] = OBSERVATIONS,
    peers: Iterable[str] = PEERS,
    seeds: Iterable[int] = (0,),
    label: str = "default",
    quick: bool = False,
) -> list[Cell]:
    """The selected cells of the matrix, in running order (a cell's peers one after another,
    so that they meet the same machine load)."""
    problems, budgets, methods = list(problems), list(budgets), list(methods)
    if quick:
        triples = [q for q in QUICK if q[0] in problems and q[1] in budgets and q[2] in methods]
        observations = [o for o in observations if o == 1]
    else:
        triples = list(itertools.product(problems, budgets, methods))
    cells = []
    for (problem, budget, method), number, seed, peer in itertools.product(
        triples, observations, seeds, peers
    ):
        if in_matrix(problem, budget, method, number, peer):
            cell_label = label if peer == "ours" else "default"
            cells.append(Cell(problem, budget, method, number, seed, peer, cell_label))
    return cells


def pending(cells: Sequence[Cell], out: Path) -> list[Cell]:
    """The cells not in ``out`` yet (the resume)."""
    done = {row_key(row) for row in load_rows([out])}
    return [c for c in cells if c.key() not in done]


# --- observations and scores -----------------------------------------------------------------
def readme_observations() -> list[list[float]]:
    """readme_gaussian's observations 1-5: the README's (0.5, -0.3), then four draws from the
    prior predictive (theta ~ U[-2, 2]^2, x = theta + 0.1 eps) with seed 37, to 4 decimals."""
    import torch

    from sbi_rounds.examples import NOISE_STD

    g = torch.Generator().manual_seed(README_SEED)
    theta = -2 + 4 * torch.rand(4, 2, generator=g, dtype=torch.float64)
    x = theta + NOISE_STD * torch.randn(4, 2, generator=g, dtype=torch.float64)
    return [list(README_XOBS)] + [[round(v, 4) for v in row] for row in x.tolist()]


def truncated_gaussian_moments(
    xobs: Sequence[float], low: float = -2.0, high: float = 2.0, sd: float | None = None
) -> tuple[list[float], list[float]]:
    """Mean and sd per parameter of readme_gaussian's exact posterior: N(x_o, 0.1^2 I)
    truncated to the box (independent truncated normals)."""
    from sbi_rounds.examples import NOISE_STD

    sd = NOISE_STD if sd is None else sd

    def pdf(z: float) -> float:
        return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    def cdf(z: float) -> float:
        return 0.5 * math.erfc(-z / math.sqrt(2))

    means, sds = [], []
    for mu in xobs:
        a, b = (low - mu) / sd, (high - mu) / sd
        mass = cdf(b) - cdf(a)
        ratio = (pdf(a) - pdf(b)) / mass
        var = 1 + (a * pdf(a) - b * pdf(b)) / mass - ratio**2
        means.append(mu + sd * ratio)
        sds.append(sd * math.sqrt(var))
    return means, sds


def gaussian_scores(samples: Any, xobs: Sequence[float]) -> dict[str, Any]:
    """readme_gaussian's accuracy: per parameter, the samples' mean error in exact-posterior
    sd units and their sd's relative error, and the worst parameter's of each."""
    means, sds = truncated_gaussian_moments(xobs)
    m = samples.double().mean(0).tolist()
    s = samples.double().std(0).tolist()
    mean_error = [abs(a - b) / c for a, b, c in zip(m, means, sds, strict=True)]
    sd_error = [a / c - 1 for a, c in zip(s, sds, strict=True)]
    return {
        "mean_error_sd": [round(v, 4) for v in mean_error],
        "sd_error": [round(v, 4) for v in sd_error],
        "worst_mean_error_sd": round(max(mean_error), 4),
        "worst_sd_error": round(max(abs(v) for v in sd_error), 4),
        "posterior_mean": [round(v, 5) for v in m],
        "posterior_sd": [round(v, 5) for v in s],
    }


def observation_of(problem: str, number: int, data: Path) -> tuple[list[float], Any]:
    """x_o of the cell's observation and sbibm's reference samples (None: exact problem)."""
    if problem == "readme_gaussian":
        return readme_observations()[number - 1], None
    from bench_sbibm import fetch_data, observation

    return observation(fetch_data(data, SBIBM_PROBLEMS), problem, number)


def score(problem: str, samples: Any, xobs: Sequence[float], reference: Any) -> dict[str, Any]:
    """The cell's accuracy: ``{"c2st": ...}`` or readme_gaussian's :func:`gaussian_scores`."""
    if problem == "readme_gaussian":
        return gaussian_scores(samples, xobs)
    from bench_sbibm import c2st

    return {"c2st": round(c2st(reference, samples), 5)}


# --- targets ---------------------------------------------------------------------------------
def published_target(problem: str, method: str, budget: str) -> float | None:
    """The sbibm paper's C2ST for the cell (mean over its 10 observations): its 1k or 10k
    figure, interpolated in log simulations between them (3x1000); None where it has none."""
    if problem not in SBIBM_PROBLEMS or method in OURS_ONLY:
        return None
    figures = PUBLISHED.get((problem, method))
    if figures is None and method == "tsnpe":
        figures = PUBLISHED.get((problem, "snpe"))  # TSNPE is SNPE with truncated proposals
    if figures is None:
        return None
    rounds, sims = parse_budget(budget)
    total = rounds * sims
    if not 1000 <= total <= 10_000:
        return None
    w = math.log10(total / 1000)
    return round(figures[0] + w * (figures[1] - figures[0]), 3)


def accuracy_value(row: dict[str, Any]) -> float | tuple[float, float]:
    """A row's accuracy: its C2ST, or readme_gaussian's (worst sd error, worst mean error)."""
    acc = row["accuracy"]
    if "c2st" in acc:
        return acc["c2st"]
    return acc["worst_sd_error"], acc["worst_mean_error_sd"]


def mean_accuracy(rows: Sequence[dict[str, Any]]) -> float | tuple[float, float] | None:
    """The mean accuracy over ``rows`` (observations and seeds)."""
    if not rows:
        return None
    values = [accuracy_value(r) for r in rows]
    if isinstance(values[0], tuple):
        return tuple(statistics.mean(v[i] for v in values) for i in range(2))  # type: ignore[return-value]
    return statistics.mean(values)  # type: ignore[arg-type]


def meets(accuracy: float | tuple[float, float] | None, target: float | None) -> bool | None:
    """Whether a mean accuracy meets its target (None: either unknown). readme_gaussian's
    target is fixed (``SD_TOLERANCE``, ``MEAN_TOLERANCE``) and ``target`` is ignored."""
    if accuracy is None:
        return None
    if isinstance(accuracy, tuple):
        return accuracy[0] <= SD_TOLERANCE and accuracy[1] <= MEAN_TOLERANCE
    if target is None:
        return None
    return accuracy <= target + 1e-9


def _acc_text(accuracy: float | tuple[float, float] | None) -> str:
    if accuracy is None:
        return "-"
    if isinstance(accuracy, tuple):
        return f"sd {accuracy[0]:.1%}, mean {accuracy[1]:.2f} sd"
    return f"{accuracy:.3f}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def summarize(rows: list[dict[str, Any]], label: str = "default", startup: float = 0.0) -> str:
    """One markdown table: per (problem, budget, method), our mean accuracy over observations
    with its target, the hand loops' accuracy, wall times and our ratio to each, and whether
    the accuracy and time targets are met. Ours: rows labelled ``label``; hand loops: their
    ``default`` rows; ratios over the (observation, seed) pairs both have. ``startup``:
    seconds of a fixed start-up cost our runs under two minutes may add (the issue's
    allowance), left out of the time verdicts only, and stated under the table."""
    groups: dict[tuple[str, str, str], dict[str, dict[tuple, dict[str, Any]]]] = {}
    for row in rows:
        if row["peer"] == "ours" and row["label"] != label:
            continue
        if row["peer"] != "ours" and row["label"] != "default":
            continue
        by = groups.setdefault((row["problem"], row["budget"], row["method"]), {})
        by.setdefault(row["peer"], {})[(row["observation"], row["seed"])] = row
    budgets = list(BUDGETS) + sorted({b for _, b, _ in groups} - set(BUDGETS))
    lines = [
        "| problem | budget | method | obs | ours | target | met | sbi_plain | sbi_paper | "
        "s ours | s plain | ours/plain | s paper | ours/paper | time met |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- |",
    ]
    for problem, budget, method in itertools.product(PROBLEMS, budgets, METHODS):
        peers = groups.get((problem, budget, method), {})
        ours = peers.get("ours", {})
        if not ours:
            continue
        plain = peers.get("sbi_plain", {})
        paper = peers.get("sbi_paper", {})
        if not paper and method in HAND_NETWORKS["sbi_paper"]:
            if HAND_NETWORKS["sbi_paper"][method] == HAND_NETWORKS["sbi_plain"][method]:
                paper = plain  # the same loop
        target = published_target(problem, method, budget)
        if method in OURS_ONLY:
            tsnpe = groups.get((problem, budget, "tsnpe"), {}).get("ours", {})
            tsnpe_mean = mean_accuracy(list(tsnpe.values()))
            target = None if tsnpe_mean is None else round(tsnpe_mean + VECTOR_FIELD_MARGIN, 3)
        acc = mean_accuracy(list(ours.values()))
        if problem == "readme_gaussian":
            target_text = f"sd {SD_TOLERANCE:.0%}, mean {MEAN_TOLERANCE} sd"
        else:
            target_text = "-" if target is None else f"{target:.3f}"
        plain_acc = mean_accuracy(list(plain.values()))
        paper_acc = mean_accuracy(list(paper.values()))
        s_plain, r_plain, judged_plain = _ratio(ours, plain, startup)
        s_paper, r_paper, judged_paper = _ratio(ours, paper, startup)
        time_ok: bool | None = None
        if judged_paper is not None:
            time_ok = judged_paper <= 1.0
        if judged_plain is not None and meets(plain_acc, target):
            time_ok = (time_ok is not False) and judged_plain <= 1.0
        seconds = statistics.mean(r["seconds"] for r in ours.values())
        lines.append(
            f"| {problem} | {budget} | {method} | {len(ours)} | {_acc_text(acc)} | "
            f"{target_text} | {_yes(meets(acc, target))} | {_acc_text(plain_acc)} | "
            f"{_acc_text(paper_acc)} | {seconds:.0f} | {s_plain} | "
            f"{'-' if r_plain is None else f'{r_plain:.2f}'} | {s_paper} | "
            f"{'-' if r_paper is None else f'{r_paper:.2f}'} | {_yes(time_ok)} |"
        )
    if startup:
        lines.append(
            f"\ntime met: our runs under {SHORT_RUN:.0f} s less a start-up of {startup:g} s"
        )
    return "\n".join(lines)


#: Runs shorter than this may add a fixed start-up cost to the time target (issue 37).
SHORT_RUN = 120.0


def _ratio(
    ours: dict[tuple, dict[str, Any]], hand: dict[tuple, dict[str, Any]], startup: float = 0.0
) -> tuple[str, float | None, float | None]:
    """The hand loop's mean seconds (text), ours / it over the pairs both have, and the same
    ratio with ``startup`` taken off our time where it is under two minutes."""
    common = sorted(set(ours) & set(hand))
    if not common:
        return "-", None, None
    mine = statistics.mean(ours[k]["seconds"] for k in common)
    theirs = statistics.mean(hand[k]["seconds"] for k in common)
    judged = mine - startup if mine < SHORT_RUN else mine
    return f"{theirs:.0f}", mine / theirs, judged / theirs


# --- running a cell --------------------------------------------------------------------------
def set_flags(overrides: Sequence[str]) -> list[str]:
    """``--set`` overrides as our command's flags: ``training.batch_size=200`` ->
    ``--training.batch-size 200`` (a value with spaces gives several arguments)."""
    flags = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: give KEY=VALUE, e.g. training.batch_size=200")
        flags += [f"--{key.replace('_', '-')}", *shlex.split(value)]
    return flags


def ours_command(cell: Cell, xobs: Sequence[float], overrides: Sequence[str] = ()) -> list[str]:
    """Our whole command for the cell: only method, budget, seed, x_o and the problem
    (readme_gaussian's simulator and prior are the defaults: not given)."""
    rounds, sims = parse_budget(cell.budget)
    argv = [sys.executable, "-m", "flows.online", "--xobs", *map(repr, map(float, xobs))]
    argv += ["--method", cell.method, "--rounds", str(rounds)]
    argv += ["--simulations-per-round", str(sims), "--seed", str(cell.seed)]
    if cell.problem != "readme_gaussian":
        problem = PROBLEMS[cell.problem]
        argv += ["--simulator", problem.simulator]
        if problem.prior_path is not None:
            argv += ["--prior", problem.prior_path]
        else:
            argv += ["--low", *map(repr, problem.low), "--high", *map(repr, problem.high)]
    return argv + set_flags(overrides)


class CellFailed(RuntimeError):
    """A cell's child process failed; the message has the end of its output."""


def _run_child(argv: list[str], workdir: Path, timeout: float | None) -> float:
    """Run ``argv`` in ``workdir`` (output to ``output.log`` there); its wall seconds."""
    log = workdir / "output.log"
    t0 = time.perf_counter()
    with log.open("wb") as f:
        try:
            proc = subprocess.run(
                argv, cwd=workdir, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise CellFailed(f"ran past {timeout} s; output in {log}") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise CellFailed(f"exit status {proc.returncode}; end of {log}:\n{tail}")
    return seconds


def run_ours(
    cell: Cell,
    xobs: Sequence[float],
    workdir: Path,
    overrides: Sequence[str],
    timeout: float | None,
) -> tuple[Any, dict[str, Any]]:
    """Our command, timed whole; then 10,000 samples of its last posterior and its round
    table's seconds (untimed)."""
    import torch

    from sbi_rounds import load_posterior
    from sbi_rounds.report.results import table

    argv = ours_command(cell, xobs, overrides)
    seconds = _run_child(argv, workdir, timeout)
    (run_file,) = (workdir / "runs").glob("*/run.h5")
    posterior = load_posterior(run_file, round=-1)
    torch.manual_seed(cell.seed)
    t0 = time.perf_counter()
    samples = _draw(posterior, NUM_SAMPLES)
    rows = [r.model_dump() for r in table(run_file)]
    stage_s = {k: round(sum(r.get(f"{k}_s") or 0 for r in rows), 3) for k in STAGES}
    keep = ("round", "network", "epochs", "stop", "retrains", *(f"{k}_s" for k in STAGES))
    details = {
        "seconds": seconds,
        "command": [Path(argv[0]).name, *argv[1:]],
        "stage_s": stage_s,
        "rounds_table": [{k: r.get(k) for k in keep} for r in rows],
        "final_sampling_s": round(time.perf_counter() - t0, 3),
    }
    return samples, details


def run_hand_loop(
    cell: Cell, xobs: Sequence[float], workdir: Path, timeout: float | None
) -> tuple[Any, dict[str, Any]]:
    """The hand loop as a child process (``--cell-json``), timed whole less its final
    sampling (which it times itself)."""
    import torch

    spec = {
        "problem": cell.problem,
        "budget": cell.budget,
        "method": cell.method,
        "peer": cell.peer,
        "seed": cell.seed,
        "xobs": list(xobs),
        "samples": str(workdir / "samples.pt"),
        "result": str(workdir / "result.json"),
    }
    argv = [sys.executable, str(Path(__file__).resolve()), "--cell-json", json.dumps(spec)]
    wall = _run_child(argv, workdir, timeout)
    result = json.loads(Path(spec["result"]).read_text())
    samples = torch.load(spec["samples"], weights_only=True)
    details = {
        "seconds": wall - result["final_sampling_s"],
        "process_seconds": wall,
        "command": [Path(argv[0]).name, *argv[1:3], "..."],
        **result,
    }
    return samples, details


def hand_loop(spec: dict[str, Any]) -> None:
    """The multi-round loop an sbi user writes (``sbi_plain``: sbi's default networks;
    ``sbi_paper``: the sbibm paper's), everything else at sbi's defaults. Runs in the child
    process; writes the last posterior's samples and a result file."""
    import torch
    from sbi.inference import NLE, NPE, NRE
    from sbi.utils import BoxUniform, RestrictedPrior, get_density_thresholder

    from sbi_rounds.builders.imports import import_object

    problem = PROBLEMS[spec["problem"]]
    method, network = spec["method"], HAND_NETWORKS[spec["peer"]][spec["method"]]
    torch.manual_seed(spec["seed"])
    if problem.prior_path is None:
        prior = BoxUniform(torch.tensor(problem.low), torch.tensor(problem.high))
    else:
        prior = import_object(problem.prior_path, "prior")()
    simulator = import_object(problem.simulator, "simulator")
    x_o = torch.tensor(spec["xobs"])
    rounds, sims = parse_budget(spec["budget"])
    if method in ("snpe", "tsnpe"):
        inference = NPE(prior, density_estimator=network, show_progress_bars=False)
    elif method == "snle":
        inference = NLE(prior, density_estimator=network, show_progress_bars=False)
    else:
        inference = NRE(prior, classifier=network, show_progress_bars=False)
    proposal, epochs = prior, []
    for _ in range(rounds):
        theta = _draw(proposal, sims)
        x = simulator(theta)
        if method == "snpe":
            estimator = inference.append_simulations(theta, x, proposal=proposal).train()
            posterior = inference.build_posterior(estimator).set_default_x(x_o)
            proposal = posterior
        elif method == "tsnpe":
            inference.append_simulations(theta, x).train(force_first_round_loss=True)
            posterior = inference.build_posterior().set_default_x(x_o)
            accept = get_density_thresholder(posterior)
            proposal = RestrictedPrior(prior, accept, sample_with="rejection")
        else:
            inference.append_simulations(theta, x).train()
            posterior = inference.build_posterior().set_default_x(x_o)
            proposal = posterior
        epochs.append(inference.summary["epochs_trained"][-1])
    t0 = time.perf_counter()
    samples = _draw(posterior, NUM_SAMPLES)
    torch.save(samples, spec["samples"])
    result = {
        "final_sampling_s": time.perf_counter() - t0,
        "epochs": epochs,
        "network": network,
    }
    Path(spec["result"]).write_text(json.dumps(result))


def _draw(distribution: Any, n: int) -> Any:
    try:
        return distribution.sample((n,), show_progress_bars=False)
    except TypeError:  # a prior, a RestrictedPrior
        return distribution.sample((n,))


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    from bench_sbibm import versions as sbibm_versions

    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {**sbibm_versions(), "prefect": md.version("prefect"), "sbi_rounds": commit or None}


def machine() -> dict[str, Any]:
    """Where and under what load the cell ran."""
    return {
        "node": platform.node(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "prefect": "server at PREFECT_API_URL"
        if os.environ.get("PREFECT_API_URL")
        else "temporary server",
    }


def run_cell(
    cell: Cell,
    *,
    data: Path,
    runs: Path | None,
    overrides: Sequence[str],
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run one cell and return its row (not yet written)."""
    xobs, reference = observation_of(cell.problem, cell.observation, data)
    host = machine()
    if runs is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"matrix-{cell.name}-"))
    else:
        workdir = runs / cell.name
        shutil.rmtree(workdir, ignore_errors=True)  # a cell is timed in one sitting
        workdir.mkdir(parents=True)
    try:
        if cell.peer == "ours":
            samples, details = run_ours(cell, xobs, workdir, overrides, timeout)
        else:
            samples, details = run_hand_loop(cell, xobs, workdir, timeout)
        accuracy = score(cell.problem, samples, xobs, reference)
    finally:
        if runs is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        **asdict(cell),
        "accuracy": accuracy,
        "seconds": round(details.pop("seconds"), 3),
        "overrides": list(overrides) if cell.peer == "ours" else [],
        "xobs": list(xobs),
        **details,
        "versions": versions(),
        "machine": host,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# --- command line ----------------------------------------------------------------------------
def _budget(text: str) -> str:
    parse_budget(text)
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument(
        "--budgets",
        nargs="+",
        type=_budget,
        default=list(BUDGETS),
        metavar="RxN",
        help=f"rounds x simulations per round (matrix: {' '.join(BUDGETS)}; others: trials)",
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument(
        "--observations", nargs="+", type=int, default=list(OBSERVATIONS), choices=OBSERVATIONS
    )
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--quick", action="store_true", help="the dozen cells of QUICK")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of our command changed, passed as its flag: training.batch_size=200 "
        "-> --training.batch-size 200 (repeatable; give --label too)",
    )
    p.add_argument("--label", default="default", help="names our command's settings")
    p.add_argument("--out", type=Path, default=HERE / "results" / "matrix.jsonl")
    p.add_argument("--data", type=Path, default=HERE / "out" / "sbibm", help="sbibm's files")
    p.add_argument(
        "--runs",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each cell's work (run, output) in DIR/<cell> (default: a temporary "
        "directory, removed)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds a cell may take")
    p.add_argument("--list", action="store_true", help="print the pending cells, run nothing")
    p.add_argument(
        "--summarize",
        nargs="*",
        type=Path,
        default=None,
        metavar="JSONL",
        help="print the table of earlier results (default: --out) and run nothing",
    )
    p.add_argument(
        "--startup",
        type=float,
        default=0.0,
        metavar="S",
        help="the table's time verdicts allow our runs under two minutes S seconds of start-up",
    )
    p.add_argument("--cell-json", default=None, help=argparse.SUPPRESS)  # a hand loop's child
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cell_json is not None:
        hand_loop(json.loads(args.cell_json))
        return 0
    if args.overrides and args.label == "default":
        parser().error("--set changes our defaults: name the variant with --label")
    if args.summarize is not None:
        print(summarize(load_rows(args.summarize or [args.out]), args.label, args.startup))
        return 0
    cells = matrix_cells(
        args.problems,
        args.budgets,
        args.methods,
        args.observations,
        args.peers,
        args.seeds,
        label=args.label,
        quick=args.quick,
    )
    todo = pending(cells, args.out)
    print(
        f"{len(cells)} cells selected, {len(cells) - len(todo)} already in {args.out}", flush=True
    )
    if args.list:
        for cell in todo:
            print(" ".join(f"{k}={v}" for k, v in asdict(cell).items()))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    failed = []
    for cell in todo:
        try:
            row = run_cell(
                cell, data=args.data, runs=args.runs, overrides=args.overrides, timeout=args.timeout
            )
        except CellFailed as e:
            print(f"FAILED {cell.name}: {e}", file=sys.stderr, flush=True)
            failed.append(cell)
            continue
        with args.out.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        short = {k: row[k] for k in ("problem", "budget", "method", "observation", "peer")}
        print(json.dumps({**short, "accuracy": row["accuracy"], "seconds": row["seconds"]}))
    print(summarize(load_rows([args.out]), args.label, args.startup))
    if failed:
        print(f"{len(failed)} cell(s) failed: {[c.name for c in failed]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
