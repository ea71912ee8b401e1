"""``sbi-rounds export RUN``: a run's simulations and posterior samples, per round, as .npz.

The file holds, for each planned round ``NNN``: ``round_NNN_theta (N, D)``, ``round_NNN_x
(N, K)``, ``round_NNN_valid (N,)`` (finite simulations; rows not simulated yet are NaN
and not valid) and ``round_NNN_posterior_samples (S, D)`` (the committed samples at
x_o); and for the run: ``xobs (K,)``, ``parameter_names`` and ``config`` (the settings
as JSON). ``numpy.load(path)`` reads it; no sbi-rounds needed. Damaged rounds (a round file
missing or truncated, say) are left out and named; the intact ones are written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Exported", "export_run", "main", "output_path"]


@dataclass(frozen=True)
class Exported:
    """What :func:`export_run` wrote: each key's shape, and the rounds it left out as
    damaged (round -> what is damaged)."""

    shapes: dict[str, tuple[int, ...]]
    damaged: dict[int, str]


def export_run(run: Path, output: Path, rounds: Sequence[int] | None = None) -> Exported:
    """Write the run's arrays to ``output`` (``.npz``), leaving out damaged rounds.

    Args:
        run: The run's directory or its run.h5.
        output: The ``.npz`` file to write.
        rounds: The rounds to export; default every planned round.

    Raises:
        DamagedRunError: The run's own data (its settings) is damaged.
    """
    from sbi_rounds.store import DamagedRunError, RunStore

    store = RunStore.open(run / "run.h5" if run.is_dir() else run)
    config = store.read_config()
    planned = store.rounds()
    missing = sorted(set(rounds or ()) - set(planned))
    if missing:
        raise ValueError(f"round(s) {missing} were never planned; planned rounds: {planned}")
    arrays: dict[str, Any] = {
        "xobs": np.asarray(config["xobs"], dtype=np.float64),
        "config": np.asarray(json.dumps(config, sort_keys=True)),
    }
    damaged = store.damaged_rounds()
    for r in rounds or planned:
        if r in damaged:
            continue
        try:  # sealed arrays are checked as they are read
            theta, x, valid = store.read_simulations(r)
            samples = store.read_samples(r)
        except DamagedRunError as e:
            damaged[r] = str(e).splitlines()[1].strip()
            continue
        arrays[f"round_{r:03d}_theta"] = theta
        arrays[f"round_{r:03d}_x"] = x
        arrays[f"round_{r:03d}_valid"] = valid
        arrays[f"round_{r:03d}_posterior_samples"] = samples
    names = config.get("parameter_names")
    widths = [v.shape[1] for k, v in arrays.items() if k.endswith("_theta")]
    if names is None and widths:
        names = [f"theta_{i + 1}" for i in range(widths[0])]
    arrays["parameter_names"] = np.asarray(names or [], dtype=str)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **arrays)
    shapes = {k: getattr(v, "shape", ()) for k, v in arrays.items()}
    return Exported(shapes=shapes, damaged={r: damaged[r] for r in sorted(damaged)})


def parser(prog: str = "sbi-rounds export") -> argparse.ArgumentParser:
    """The export command line."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # a shortened flag (--round for --rounds) is an error, not a guess
        prog=prog,
        description="Export a run's parameters, simulations, validity and posterior samples "
        "per round (and x_o, parameter names and settings) to one .npz file that numpy "
        "reads. Works on finished and interrupted runs; reads the run file only.",
    )
    p.add_argument("run", help="the run's directory or its run.h5")
    p.add_argument(
        "-o",
        "--output",
        help="the .npz file to write (.npz is added to a name without it), or a directory "
        "to write <run id>.npz in (default: <run dir>/<run id>.npz)",
    )
    p.add_argument(
        "--rounds", nargs="+", type=int, metavar="R", help="rounds to export (default: all)"
    )
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    return p


def output_path(run: Path, output: str | None) -> Path:
    """The file an export of ``run`` writes, given ``-o`` (None: the default)."""
    directory = run if run.is_dir() else run.parent
    name = f"{directory.name}.npz"
    if output is None:
        return directory / name
    path = Path(output)
    if path.is_dir():
        return path / name
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def main(argv: Sequence[str] | None = None, *, prog: str = "sbi-rounds export") -> int:
    """Export; returns 0, 1 when damaged rounds were left out (the file holds the others),
    or 2 when the run cannot be read."""
    from flows.cli.outputs import cannot_write
    from sbi_rounds.store import RunFileError

    args = parser(prog).parse_args(argv)
    run = Path(args.run)
    directory = run if run.is_dir() else run.parent
    output = output_path(run, args.output)
    if output.exists() and not args.force:
        print(
            f"error: {output} exists; add --force to overwrite it, or give another -o FILE",
            file=sys.stderr,
        )
        return 2
    why = cannot_write(output)
    if why is not None:
        print(
            f"error: cannot write {output} ({why}); give a writable place with -o FILE.npz "
            "(the run itself is only read)",
            file=sys.stderr,
        )
        return 2
    try:
        written = export_run(run, output, args.rounds)
    except (RunFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {output}:")
    for key, shape in written.shapes.items():
        print(f"  {key}  {tuple(shape)}")
    if written.damaged:
        which = ", ".join(str(r) for r in written.damaged)
        print(
            f"error: round(s) {which} of {directory} are damaged and were left out ("
            + "; ".join(f"round {r}: {what}" for r, what in written.damaged.items())
            + f"); repair them with: sbi-rounds verify {directory} --repair",
            file=sys.stderr,
        )
        return 1
    return 0
