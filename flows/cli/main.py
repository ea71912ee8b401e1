"""The ``sbi-rounds`` command: one subcommand per job, each with its own ``--help``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from flows.cli.sys_path import working_directory_last

__all__ = ["COMMANDS", "main"]

#: Subcommand -> (module with ``main(argv, prog=...)``, what it does).
COMMANDS = {
    "run": ("flows.cli.run", "run, resume or extend a run (the online_inference flow)"),
    "campaign": ("flows.cli.campaign", "one run per observation of a table, and a summary"),
    "report": ("flows.cli.report", "write a run's self-contained HTML report"),
    "status": ("flows.cli.status", "a run directory's runs, rounds and stages, and which run"),
    "export": ("flows.cli.export", "a run's simulations and posterior samples as .npz"),
    "verify": ("flows.cli.verify", "read a whole run file and name what is damaged"),
}

USAGE = """\
usage: sbi-rounds COMMAND [options]

Resumable multi-round simulation-based inference (SNPE, TSNPE, SNLE, SNRE, TFMPE,
TNPSE) with sbi, Dask, HDF5 and Prefect.

commands:
{commands}

'sbi-rounds COMMAND --help' describes a command's options. Examples:
  sbi-rounds run --xobs 0.5 -0.3 --rounds 5 --workers 8
  sbi-rounds campaign --observations xobs.csv --campaign-dir campaigns/c1 --rounds 3
  sbi-rounds status runs
  sbi-rounds report runs/snpe-1a2b3c4d5e
  sbi-rounds export runs/snpe-1a2b3c4d5e -o run.npz
  sbi-rounds verify runs/snpe-1a2b3c4d5e
"""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``sbi-rounds COMMAND ...``; returns the command's exit status.

    Args:
        argv: The command and its arguments; default ``sys.argv[1:]``.
        prog: The program name the command's help and messages show; default
            ``sbi-rounds COMMAND`` (``python -m flows.online`` is the ``run`` command).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from sbi_rounds import __version__

        print(f"sbi-rounds {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{_usage()}\nerror: unknown command {name!r}", file=sys.stderr)
        return 2
    prog = prog or f"sbi-rounds {name}"
    if name in ("run", "campaign"):
        from flows.cli.signals import starting

        starting(rest, prog)  # before the slow imports: Prefect's server boots meanwhile
    working_directory_last()  # user modules (a simulator) import from it, after ours
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest, prog=prog))
    except BrokenPipeError:  # the reader went away (sbi-rounds status | head -1): end quietly
        return _pipe_closed()


def _pipe_closed() -> int:
    """Point stdout at /dev/null (the interpreter's last flush then fails no more); the
    exit status of a program ended by SIGPIPE, as ``yes | head -1`` gives."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13  # SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
