"""The ``sbi-rounds`` command: run, campaign, report, status, export and verify a run.

The top layer: the only package that knows the library, the tasks and the flows (it runs
``flows.online`` and ``flows.campaign``), and that nothing else imports but the flow modules'
``python -m`` doors, through :func:`flows.cli.main.main`. It is light at import: each
subcommand imports what it needs.
"""

from flows.cli.main import main

__all__ = ["main"]
