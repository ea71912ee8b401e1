"""Posterior checks: summaries, predictive checks, movement, C2ST, calibration and figures.

It may import ``lifecycle`` (the resolved run), ``simulation`` (the checks' simulations),
``methods``, ``config``, ``store``, ``seeding`` and ``errors``; never ``stages`` or
``report``, which build on it.
"""

from sbi_rounds.diagnostics import alerts, calibration, checks, plots, simulations, stage, summary
from sbi_rounds.diagnostics.alerts import *  # noqa: F403
from sbi_rounds.diagnostics.calibration import *  # noqa: F403
from sbi_rounds.diagnostics.checks import *  # noqa: F403
from sbi_rounds.diagnostics.plots import *  # noqa: F403
from sbi_rounds.diagnostics.simulations import *  # noqa: F403
from sbi_rounds.diagnostics.stage import *  # noqa: F403
from sbi_rounds.diagnostics.summary import *  # noqa: F403

__all__ = [
    *alerts.__all__,
    *calibration.__all__,
    *checks.__all__,
    *plots.__all__,
    *simulations.__all__,
    *stage.__all__,
    *summary.__all__,
]
