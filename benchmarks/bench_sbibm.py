"""Accuracy per simulation on sbibm's tasks: our defaults against the published figures.

Runs the project (the library stages the flow runs, on a local Dask cluster) on sbibm's
``two_moons``, ``slcp`` and ``gaussian_linear`` at 1k (10 rounds x 100 simulations) and 10k
(10 x 1000) with ``snpe``, ``tsnpe``, ``snle`` and ``snre``, giving only the task, budget,
method and seed (the project's defaults for everything else), draws 10,000 samples from
``load_posterior(run, round=-1)`` at the observation and scores them by C2ST against sbibm's
reference samples (sbibm's classifier: 0.5 is exact). ``--peer sbi`` runs the hand-written
sbi loop with the same settings instead (network, training, atoms, MCMC, truncation).

sbibm's observations and reference samples come from the ``sbibm`` wheel's data files; the
script fetches them once (``pip download --no-deps sbibm==1.1.0``, unzipped into
``--data``); sbibm is never imported. The simulators are plain torch in
``sbi_rounds.examples``. Only observations 1-5 are used, for tuning and for the table.

Every cell (task, budget, method, observation, seed, label) is appended to ``--out`` as one
JSON line as soon as it finishes, and cells already there are skipped: the benchmark resumes
after an interruption and can be spread over sittings or machines. With ``--runs DIR`` the
cells' runs live in ``DIR`` instead of a temporary directory, so an interrupted cell resumes
its own run (the project's resume: finished rounds and simulations are kept) when the same
command is given again: the way to spread a 10k cell over several sittings. A resumed cell's
``seconds`` is then the sum of its stages' seconds over every sitting plus the final
sampling (``resumed_at_round`` says where it picked up).

    python benchmarks/bench_sbibm.py --tasks two_moons --budgets 1k --methods snpe tsnpe
    python benchmarks/bench_sbibm.py --peer sbi --tasks two_moons --budgets 1k
    python benchmarks/bench_sbibm.py --set training.batch_size=50 --label batch50 ...
    python benchmarks/bench_sbibm.py --budgets 10k --runs benchmarks/out/sbibm-runs ...
    python benchmarks/bench_sbibm.py --summarize benchmarks/results/sbibm.jsonl
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_c2st's paired intervals

SBIBM = "sbibm==1.1.0"
TASKS: dict[str, dict[str, Any]] = {
    "two_moons": {
        "simulator": "sbi_rounds.examples:two_moons",
        "prior": {"low": [-1.0, -1.0], "high": [1.0, 1.0]},
    },
    "slcp": {
        "simulator": "sbi_rounds.examples:slcp",
        "prior": {"low": [-3.0] * 5, "high": [3.0] * 5},
    },
    "gaussian_linear": {
        "simulator": "sbi_rounds.examples:gaussian_linear",
        "prior": {"path": "sbi_rounds.examples:gaussian_linear_prior"},
    },
}
BUDGETS = {"1k": (10, 100), "10k": (10, 1000)}
METHODS = ("snpe", "tsnpe", "snle", "snre", "tfmpe", "tnpse")
#: Methods sbi cannot run in rounds: no published sequential figure, no ``--peer sbi`` loop.
OURS_ONLY = ("tfmpe", "tnpse")
#: Published C2ST (mean over sbibm's 10 observations, 10 rounds) at 1k and 10k simulations:
#: SNPE, SNLE, SNRE from sbi-benchmark/results main_paper.csv (sbibm paper, Lueckmann et al.
#: 2021), TSNPE from mackelab/tsnpe_neurips (Deistler et al. 2022).
PUBLISHED = {
    ("two_moons", "snpe"): (0.643, 0.554),
    ("two_moons", "tsnpe"): (0.632, 0.536),
    ("two_moons", "snle"): (0.657, 0.571),
    ("two_moons", "snre"): (0.651, 0.582),
    ("slcp", "snpe"): (0.965, 0.845),
    ("slcp", "tsnpe"): (0.970, 0.866),
    ("slcp", "snle"): (0.921, 0.713),
    ("slcp", "snre"): (0.968, 0.917),
    ("gaussian_linear", "snpe"): (0.652, 0.544),
    ("gaussian_linear", "tsnpe"): (0.751, 0.576),
    ("gaussian_linear", "snle"): (0.628, 0.548),
    ("gaussian_linear", "snre"): (0.670, 0.536),
    # bernoulli_glm and slcp_distractors (bench_matrix.py's problems), same source
    ("bernoulli_glm", "snpe"): (0.855, 0.614),
    ("bernoulli_glm", "snle"): (0.634, 0.553),
    ("bernoulli_glm", "snre"): (0.718, 0.584),
    ("slcp_distractors", "snpe"): (0.978, 0.931),
    ("slcp_distractors", "snle"): (0.992, 0.949),
    ("slcp_distractors", "snre"): (0.981, 0.974),
}
NUM_SAMPLES = 10_000


def best_published(task: str, budget: str) -> tuple[float, str]:
    """The best (lowest) published sequential C2ST for ``task`` at ``budget``, and its method."""
    i = 0 if budget == "1k" else 1
    return min((v[i], m) for (t, m), v in PUBLISHED.items() if t == task)


# --- sbibm's data files -------------------------------------------------------------------
#: sbibm tasks whose files lie in another task's folder, and their observation file:
#: slcp_distractors shares slcp's reference samples (the distractors do not depend on the
#: parameters) and has its own observations.
SHARED_FILES = {"slcp_distractors": ("slcp", "observation_distractors.csv")}


def task_folder(task: str) -> str:
    """The folder under sbibm's ``tasks`` that holds ``task``'s files."""
    return SHARED_FILES.get(task, (task, ""))[0]


def fetch_data(data: Path, names: Iterable[str] = tuple(TASKS)) -> Path:
    """sbibm's task files under ``data/sbibm/tasks`` for the tasks ``names`` (default: this
    benchmark's), fetched from the wheel once."""
    tasks = data / "sbibm" / "tasks"
    folders = {task_folder(t) for t in names}
    if all((tasks / f).is_dir() for f in folders):
        return tasks
    data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", SBIBM, "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("sbibm-*.whl")
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith("sbibm/tasks/") and any(f"/{f}/files/" in name for f in folders):
                    z.extract(name, data)
    return tasks


def _read_csv(path: Path) -> np.ndarray:
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    return np.array(rows[1:], dtype=np.float32)


def observation(tasks: Path, task: str, number: int) -> tuple[list[float], np.ndarray]:
    """sbibm's observation ``number`` of ``task`` and its 10,000 reference samples."""
    folder = tasks / task_folder(task) / "files" / f"num_observation_{number}"
    name = SHARED_FILES.get(task, ("", "observation.csv"))[1]
    xobs = _read_csv(folder / name)[0].tolist()
    return xobs, _read_csv(folder / "reference_posterior_samples.csv.bz2")


# --- one cell ---------------------------------------------------------------------------
def _nested(overrides: list[str]) -> dict[str, Any]:
    """``["training.batch_size=50", ...]`` as nested settings (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in overrides:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, section by section (a section unset or None in
    ``base``, such as ``training.scheduler``, is filled from ``extra`` alone)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict):
            below = out.get(k)
            out[k] = _merge(below if isinstance(below, dict) else {}, v)
        else:
            out[k] = v
    return out


def make_config(
    task: str,
    budget: str,
    method: str,
    xobs: list[float],
    seed: int,
    run_dir: Path,
    overrides: list[str],
) -> Any:
    """The run's settings: only task, budget, method and seed given, plus any overrides."""
    from sbi_rounds.config import RunConfig

    rounds, sims = BUDGETS[budget]
    settings = {
        "xobs": xobs,
        "method": method,
        "rounds": rounds,
        "simulations_per_round": sims,
        "simulator": {"path": TASKS[task]["simulator"]},
        "prior": TASKS[task]["prior"],
        "seed": seed,
        "run_dir": str(run_dir),
        "logger": {"backend": "none"},
    }
    return RunConfig(**_merge(settings, _nested(overrides)))


def run_ours(config: Any, client: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """The stages the flow runs, round by round; 10,000 samples of the last round's posterior."""
    from sbi_rounds import stages
    from sbi_rounds.report.results import load_posterior

    with stages.run_session(config) as run:
        for r in range(1, config.rounds + 1):
            stages.sample_proposal(run, r)
            stages.simulate(run, r, client)
            stages.append_simulations(run, r)
            stages.train(run, r)
            stages.build_posterior(run, r)
            stages.checkpoint(run, r, pairplot=False)
        rows = stages.round_table(run.store)
        summaries = [run.store.training_summary(r) for r in run.store.rounds()]
    t0 = time.perf_counter()
    posterior = load_posterior(config.run_path, round=-1)
    torch.manual_seed(config.seed)
    samples = _sample(posterior, NUM_SAMPLES)
    details = {
        "final_sampling_s": time.perf_counter() - t0,
        "epochs": [row.epochs for row in rows],
        "stop_reasons": [None if s is None else s.stop_reason for s in summaries],
        "retrains": [row.retrains or 0 for row in rows],
        "networks": [row.network for row in rows],
        "in_prior_percent": [row.in_prior for row in rows],
        "stage_s": {
            k: round(sum(getattr(row, f"{k}_s") or 0 for row in rows), 2)
            for k in ("sample", "simulate", "train", "posterior", "checkpoint", "checks")
        },
    }
    return samples, details


def cell_directory(row: dict[str, Any]) -> str:
    """Where a cell's run lives under ``--runs``: one per task, budget, method, observation,
    seed and variant (settings that may change on resume, training's, keep the run id, so
    two variants must not share a run)."""
    name = f"{row['task']}-{row['budget']}-{row['method']}-{row['observation']}-{row['seed']}"
    if row["peer"] != "ours":
        name += f"-{row['peer']}"
    return name if row["label"] == "default" else f"{name}-{row['label']}"


def resumed_at(run_file: Path) -> int | None:
    """The round an earlier sitting's run at ``run_file`` is resumed in (its first round not
    done; one past the last round when every round was done and only the final sampling and
    the C2ST run again); None when no earlier sitting planned a round."""
    from sbi_rounds.store import RunStore, Stage

    if not run_file.exists():
        return None
    store = RunStore.open(run_file)
    rounds = store.rounds()
    if not rounds:
        return None
    return 1 + sum(1 for r in rounds if store.stage(r) == Stage.DONE)


def _sample(posterior: Any, n: int) -> torch.Tensor:
    try:
        return posterior.sample((n,), show_progress_bars=False)
    except TypeError:
        return posterior.sample((n,))


def run_sbi_loop(config: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """The loop an sbi user writes from sbi's tutorials, with ``config``'s settings spelled out."""
    from sbi.inference import NLE, NPE, NRE
    from sbi.neural_nets import classifier_nn, likelihood_nn, posterior_nn
    from sbi.utils import RestrictedPrior, get_density_thresholder

    if config.method in OURS_ONLY:
        raise ValueError(f"sbi cannot run {config.method} in rounds: no --peer sbi loop for it")

    from sbi_rounds.builders.imports import import_object
    from sbi_rounds.builders.priors import build_prior
    from sbi_rounds.training.config import resolve_batch_size
    from sbi_rounds.training.trackers import NullTracker

    torch.manual_seed(config.seed)
    prior = build_prior(config.prior)
    simulator = import_object(config.simulator.path, "simulator")
    x_o = torch.tensor(config.xobs)
    net, t, p = config.network, config.training, config.posterior
    z = {"z_score_theta": net.z_score_theta, "z_score_x": net.z_score_x}
    train = {
        "learning_rate": t.learning_rate,
        "validation_fraction": t.validation_fraction,
        "stop_after_epochs": t.patience,
        "clip_max_norm": t.clip_grad_norm,
    }
    if t.max_epochs is not None:
        train["max_num_epochs"] = t.max_epochs
    density = {
        "hidden_features": net.hidden_features,
        "num_transforms": net.num_transforms,
        "num_bins": net.num_bins,
        "num_components": net.num_components,
        **z,
    }
    kw = {"show_progress_bars": False, "tracker": NullTracker()}
    method, model = config.method, config.network_model
    if method in ("snpe", "tsnpe"):
        inference = NPE(prior, posterior_nn(model, **density), **kw)
    elif method == "snle":
        inference = NLE(prior, likelihood_nn(model, **density), **kw)
    else:
        inference = NRE(prior, classifier_nn(model, hidden_features=net.hidden_features, **z), **kw)
        train["num_atoms"] = config.nre.num_atoms
    mcmc = {
        "num_chains": p.num_chains,
        "thin": p.thin,
        "warmup_steps": p.warmup_steps,
        "init_strategy": p.init_strategy,
    }
    proposal, epochs, rows = prior, [], 0
    for r in range(1, config.rounds + 1):
        theta = _sample(proposal, config.simulations_for_round(r))
        x = simulator(theta)
        rows += len(theta)  # batch_size "auto" resolved as our runner does, for all rows so far
        num_train = rows - max(1, round(rows * t.validation_fraction))
        train["training_batch_size"] = resolve_batch_size(t.batch_size, num_train)
        if method == "snpe":
            estimator = inference.append_simulations(theta, x, proposal=proposal).train(
                num_atoms=config.npe.num_atoms, **train
            )
            posterior = inference.build_posterior(estimator).set_default_x(x_o)
            proposal = posterior
        elif method == "tsnpe":
            inference.append_simulations(theta, x).train(force_first_round_loss=True, **train)
            posterior = inference.build_posterior().set_default_x(x_o)
            accept = get_density_thresholder(
                posterior,
                quantile=config.tsnpe.quantile,
                num_samples_to_estimate_support=config.tsnpe.num_samples_to_estimate,
            )
            proposal = RestrictedPrior(prior, accept, sample_with="rejection")
        else:
            inference.append_simulations(theta, x).train(**train)
            posterior = inference.build_posterior(
                mcmc_method=p.mcmc_method, mcmc_parameters=mcmc
            ).set_default_x(x_o)
            proposal = posterior
        epochs.append(inference.summary["epochs_trained"][-1])
    t0 = time.perf_counter()
    samples = _sample(posterior, NUM_SAMPLES)
    return samples, {"final_sampling_s": time.perf_counter() - t0, "epochs": epochs}


def c2st(reference: np.ndarray, samples: torch.Tensor) -> float:
    """sbibm's C2ST (the run's posterior checks compute the same)."""
    from sbi_rounds.diagnostics.checks import c2st_sbibm

    return c2st_sbibm(reference, samples.numpy(), seed=1)["accuracy"]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {
        "python": platform.python_version(),
        **{p: md.version(p) for p in ("torch", "sbi", "dask", "h5py")},
    }


# --- the table ---------------------------------------------------------------------------
def load_rows(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        if path.exists():
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def cell_key(row: dict[str, Any]) -> tuple:
    return (
        row["task"],
        row["budget"],
        row["method"],
        row["observation"],
        row["seed"],
        row["peer"],
        row["label"],
    )


def summarize(rows: list[dict[str, Any]], label: str = "default") -> str:
    """Per task, budget and method: our mean C2ST over observations beside the published one
    and the sbi loop's (paired by observation and seed), and seconds per run."""
    from bench_c2st import paired, verdict

    by: dict[tuple, dict[tuple, dict[str, Any]]] = {}
    for row in rows:
        if row["label"] != label:
            continue
        by.setdefault((row["task"], row["budget"], row["method"], row["peer"]), {})[
            (row["observation"], row["seed"])
        ] = row
    lines = [
        "| task | budget | method | obs x seeds | ours | published | sbi loop | "
        "ours - sbi loop [95% CI] | s / run ours | s / run sbi |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for task in TASKS:
        for budget in BUDGETS:
            for method in METHODS:
                ours = by.get((task, budget, method, "ours"), {})
                if not ours:
                    continue
                sbi = by.get((task, budget, method, "sbi"), {})
                if (task, method) in PUBLISHED:
                    pub, pub_text = PUBLISHED[(task, method)][0 if budget == "1k" else 1], ""
                else:  # no published figure: against the best published sequential one
                    pub, best = best_published(task, budget)
                    pub_text = f" (best: {best})"
                mean = statistics.mean(r["c2st"] for r in ours.values())
                common = sorted(set(ours) & set(sbi))
                if common:
                    d = paired([ours[k]["c2st"] for k in common], [sbi[k]["c2st"] for k in common])
                    vs = (
                        f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {verdict(d)}"
                        if len(common) > 1
                        else f"{d['mean']:+.3f} (1 pair)"
                    )
                    sbi_mean = f"{statistics.mean(sbi[k]['c2st'] for k in common):.3f}"
                    sbi_s = f"{statistics.median(sbi[k]['seconds'] for k in common):.0f}"
                else:
                    vs, sbi_mean, sbi_s = "-", "-", "-"
                mark = "**" if mean <= pub else ""
                lines.append(
                    f"| {task} | {budget} | {method} | {len(ours)} | {mark}{mean:.3f}{mark} | "
                    f"{pub:.3f}{pub_text} | {sbi_mean} | {vs} | "
                    f"{statistics.median(r['seconds'] for r in ours.values()):.0f} | {sbi_s} |"
                )
    return "\n".join(lines)


def variants_table(rows: list[dict[str, Any]]) -> str:
    """Tuning: one line per (task, budget, method, label) with C2ST per observation and mean."""
    cells: dict[tuple, dict[int, float]] = {}
    overrides: dict[str, list[str]] = {}
    for row in rows:
        key = (row["task"], row["budget"], row["method"], row["label"])
        cells.setdefault(key, {})[row["observation"]] = row["c2st"]
        overrides[row["label"]] = row.get("overrides", [])
    lines = [
        "| task | budget | method | variant | settings | obs 1 | obs 2 | obs 3 | obs 4 | "
        "obs 5 | mean |",
        "| --- | --- | --- | --- | --- |" + " ---: |" * 6,
    ]
    for (task, budget, method, label), by_obs in sorted(cells.items()):
        values = [f"{by_obs[o]:.3f}" if o in by_obs else "" for o in range(1, 6)]
        lines.append(
            f"| {task} | {budget} | {method} | {label} | "
            f"{' '.join(overrides[label]) or '(defaults then)'} | {' | '.join(values)} | "
            f"{statistics.mean(by_obs.values()):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", nargs="+", default=["1k"], choices=list(BUDGETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--observations",
        nargs="+",
        type=int,
        default=[1, 2, 3, 4, 5],
        choices=[1, 2, 3, 4, 5],
        help="sbibm observations (1-5 only: tuning)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--peer",
        choices=["ours", "sbi"],
        default="ours",
        help="ours: the project's stages; sbi: the hand-written sbi loop with the same settings",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="a setting changed from the defaults, e.g. "
        "training.batch_size=50 (repeatable; give --label too)",
    )
    parser.add_argument("--label", default="default", help="names the settings in the results")
    parser.add_argument("--data", type=Path, default=HERE / "out" / "sbibm")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sbibm.jsonl")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers")
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the cells' runs here (default: a temporary directory), so an interrupted "
        "cell resumes its run when the command is given again",
    )
    parser.add_argument(
        "--summarize",
        nargs="*",
        type=Path,
        default=None,
        metavar="JSONL",
        help="print the table of earlier results and run nothing",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSONL",
        help="print C2ST per observation for every variant (tuning) and run nothing",
    )
    args = parser.parse_args()
    if args.overrides and args.label == "default":
        parser.error("--set changes the defaults: name the variant with --label")
    if args.variants:
        print(variants_table(load_rows(args.variants)))
        return
    if args.summarize is not None:
        print(summarize(load_rows(args.summarize or [args.out]), args.label))
        return
    from sbi_rounds.cluster import open_client
    from sbi_rounds.config import ClusterConfig

    tasks_dir = fetch_data(args.data)
    done = {cell_key(r) for r in load_rows([args.out])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_client(ClusterConfig(workers=args.workers)) as client,
    ):
        runs = args.runs or Path(tmp)
        for task in args.tasks:
            for budget in args.budgets:
                for method in args.methods:
                    for number in args.observations:
                        xobs, reference = observation(tasks_dir, task, number)
                        for seed in args.seeds:
                            row = {
                                "task": task,
                                "budget": budget,
                                "method": method,
                                "observation": number,
                                "seed": seed,
                                "peer": args.peer,
                                "label": args.label,
                            }
                            if cell_key(row) in done:
                                continue
                            run_dir = runs / cell_directory(row)
                            config = make_config(
                                task, budget, method, xobs, seed, run_dir, args.overrides
                            )
                            resumed = resumed_at(config.run_path)
                            t0 = time.perf_counter()
                            if args.peer == "ours":
                                samples, details = run_ours(config, client)
                            else:
                                samples, details = run_sbi_loop(config)
                            seconds = time.perf_counter() - t0
                            if resumed is not None:  # this sitting's time is only a part
                                seconds = sum(details["stage_s"].values())
                                seconds += details["final_sampling_s"]
                                details["resumed_at_round"] = resumed
                            row.update(
                                c2st=c2st(reference, samples),
                                seconds=seconds,
                                overrides=args.overrides,
                                **details,
                                versions=versions(),
                                date=time.strftime("%Y-%m-%d"),
                            )
                            print(
                                json.dumps({k: row[k] for k in (*row.keys(),) if k != "versions"}),
                                flush=True,
                            )
                            with args.out.open("a") as f:
                                f.write(json.dumps(row) + "\n")
    print(summarize(load_rows([args.out]), args.label))


if __name__ == "__main__":
    main()
