"""Prefect flows: ``online_inference`` (``python -m flows.online``) and the run report.

Importing this package makes ``tasks`` resolve to sbi-rounds' own package even when the
working directory holds a ``tasks.py`` (see ``flows.cli.packages``).
"""

from flows.cli.packages import pin_own_packages

__all__: list[str] = []

pin_own_packages()
