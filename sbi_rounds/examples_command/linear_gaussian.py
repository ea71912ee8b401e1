"""The linear Gaussian model as an external program: ``x = theta + 0.1 * eps`` per row.

Usage: ``python -m sbi_rounds.examples_command.linear_gaussian INPUT OUTPUT [SEED]
[--nan-above T]``. Reads CSV rows of parameters from INPUT and writes one CSV row of
summaries per parameter row to OUTPUT (the file protocol of ``sbi_rounds.simulation``).
With ``--nan-above T``, rows whose first parameter exceeds T give ``nan`` summaries (a
failed simulation). Uses the standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys

__all__ = ["main", "simulate_row"]

NOISE_STD = 0.1


def simulate_row(
    theta: list[float], rng: random.Random, nan_above: float = math.inf
) -> list[float]:
    """Simulate one parameter row ``(D,)``; returns its summaries ``(D,)``."""
    if theta and theta[0] > nan_above:
        return [math.nan] * len(theta)
    return [t + NOISE_STD * rng.gauss(0.0, 1.0) for t in theta]


def main(argv: list[str] | None = None) -> int:
    """Run the program; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("seed", nargs="?", type=int, default=0)
    p.add_argument("--nan-above", type=float, default=math.inf)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    with open(args.input, newline="") as fin, open(args.output, "w", newline="") as fout:
        out = csv.writer(fout)
        for row in csv.reader(fin):
            if not row or row[0].startswith("#"):
                continue
            out.writerow(
                repr(v) for v in simulate_row([float(v) for v in row], rng, args.nan_above)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
