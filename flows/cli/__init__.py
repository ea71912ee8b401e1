"""The ``sbi-rounds`` command: ``run``, ``report``, ``status`` and ``export`` a run.

This package is light at import (the subcommands import what they need), and it is the
only part of ``sbi_rounds`` that runs the Prefect flow (``flows.online``, imported when a
run starts): it sits on top of the stack, beside ``flows/``.
"""

from flows.cli.main import main

__all__ = ["main"]
