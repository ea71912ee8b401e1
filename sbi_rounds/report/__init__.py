"""What a run tells its reader, read from the run file alone.

Owns the round table (``table``: one row per round and its text form, shared by the
console, the Prefect artifacts and the report), the finished or interrupted run as Python
objects (``results``: :func:`~sbi_rounds.report.results.load_posterior`,
:func:`~sbi_rounds.report.results.load_run`, also importable from ``sbi_rounds``) and the
self-contained HTML report (``document``, with its first screen in ``summary`` and its
building blocks in ``html``). It may import ``lifecycle`` (the resolved run),
``diagnostics``, ``store``, ``methods``, ``builders``, ``config`` and ``errors``; it never
imports ``stages``, Prefect or ``flows``, and nothing in it writes to the run file.
"""

__all__: list[str] = []
