"""``sbi-rounds campaign``: one run per observation of a table, as one Prefect flow.

The campaign's own settings (:class:`~sbi_rounds.config.CampaignConfig`: the table, the
directory, the runs at once) and the settings every run shares (``RunConfig``'s, without
``xobs``, ``run_dir`` and ``run_id``) have flags generated from their models, environment
variables (``SBI_ROUNDS_CAMPAIGN__OBSERVATIONS`` for the campaign's) and places in the
``--config`` file (the campaign's under ``campaign:``). Bad input fails in a second with
one line and status 2; a stopped campaign exits with status 130 and prints the command
that resumes it; a campaign with failed observations exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from flows.cli.continuation import continue_in_new_job, wait_for_previous_job
from flows.cli.flags import (
    HelpFormatter,
    add_setting_flags,
    add_verbosity_flags,
    setting_argument,
    setting_values,
    verbosity,
)
from flows.cli.signals import TIME_LIMIT, check_time_limit, interrupts
from sbi_rounds.campaign import (
    RUN_THREAD_PREFIX,
    SET_BY_CAMPAIGN,
    is_finished,
    observation_configs,
    shared_round_config,
)
from sbi_rounds.config import CampaignConfig, RunConfig, format_validation_error
from sbi_rounds.config.fields import settings_of
from sbi_rounds.config.files import config_file_source
from sbi_rounds.config.sources import (
    ENV_CONFIG,
    ENV_PREFIX,
    EnvironmentSource,
    env_settings,
    merge,
    set_path,
)

if TYPE_CHECKING:
    from sbi_rounds.lifecycle.preflight import Preflight

__all__ = ["build_settings", "main", "parser"]

#: The short flags of the campaign's settings.
ALIASES = {
    "observations": ("--observations",),
    "directory": ("--campaign-dir",),
    "max_concurrent": ("--max-concurrent",),
}
_DEST = "campaign:"
DESCRIPTION = (
    "Run one multi-round inference per observation of a table (one row each), with shared "
    "settings, as one Prefect flow on one Dask cluster. Rerun the same command to resume: "
    "finished observations are skipped, the others continue mid-round. Ends with a summary "
    "table and <campaign dir>/summary.html."
)


def parser(prog: str = "sbi-rounds campaign") -> argparse.ArgumentParser:
    """The command line: campaign settings, run options, then one flag per shared setting."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # a shortened flag (--round for --rounds) is an error, not a guess
        prog=prog,
        description=textwrap.fill(DESCRIPTION, 88),
        usage="%(prog)s --observations TABLE [--campaign-dir DIR] [--config FILE] [SETTING ...]",
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("campaign settings")
    for setting in settings_of(CampaignConfig):
        names = [*ALIASES.get(setting.dotted, ()), "--campaign." + setting.dotted.replace("_", "-")]
        g.add_argument(*names, **{**setting_argument(setting), "dest": _DEST + setting.dotted})
    g.add_argument(
        "--config",
        metavar="FILE.yaml|toml",
        help="settings file: the shared settings, and the campaign's under campaign:",
    )
    g.add_argument(
        "--print-config", action="store_true", help="print the resolved settings as YAML and exit"
    )
    g.add_argument(
        "--no-progress",
        action="store_true",
        help="accepted as in sbi-rounds run; a campaign shows progress lines (behind each "
        "run's id), never a live display",
    )
    add_verbosity_flags(g, "the campaign")
    add_setting_flags(p)
    return p


def build_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[CampaignConfig, dict[str, Any]]:
    """The campaign's settings and the shared ones: flag > environment > file > default.

    Raises:
        ValueError: A run setting the campaign sets itself, or an unreadable file.
        pydantic.ValidationError: A wrong campaign setting; the message names it.
    """
    environ = os.environ if environ is None else environ
    path = getattr(args, "config", None) or environ.get(ENV_CONFIG)
    from_file = config_file_source(path, RunConfig)() if path else {}
    campaign_file = from_file.pop("campaign", None) or {}
    campaign_env = EnvironmentSource(CampaignConfig, environ, f"{ENV_PREFIX}CAMPAIGN__")()
    campaign_flags = {
        k.removeprefix(_DEST): v for k, v in vars(args).items() if k.startswith(_DEST)
    }
    campaign = CampaignConfig.model_validate({**campaign_file, **campaign_env, **campaign_flags})
    flags = setting_values(args)
    from_env = env_settings(environ)
    for source, where in (
        (flags, "a flag"),
        (from_env, "the environment"),
        (from_file, "the config file"),
    ):
        given = [k for k in SET_BY_CAMPAIGN if k in source]
        if given:
            raise ValueError(
                f"{', '.join(given)} given by {where}: a campaign sets them for each run (xobs "
                "from a row of --observations, the run files under --campaign-dir)"
            )
    return campaign, merge(from_file, from_env, flags)


def _settings(
    args: argparse.Namespace,
) -> tuple[CampaignConfig, dict[str, Any], list[RunConfig], list[Preflight]] | int:
    """The settings, every observation's, and the preflight of each not finished; or the
    status of bad input (2)."""
    from sbi_rounds.errors import ConfigMismatchError
    from sbi_rounds.lifecycle.locking import RunLockedError
    from sbi_rounds.lifecycle.preflight import preflight
    from sbi_rounds.store import RunFileError

    try:
        campaign, shared = build_settings(args)
        configs = observation_configs(campaign, shared)
        checked = []
        if not getattr(args, "print_config", False):
            wait_for_previous_job([c.run_path for c in configs])  # a requeued batch job
            shared_round = campaign.shared_first_round
            if shared_round and not all(is_finished(c) for c in configs):
                preflight(shared_round_config(campaign, shared))
            checked = [
                preflight(c, check_start=not shared_round) for c in configs if not is_finished(c)
            ]
    except ValidationError as e:
        print(f"error: {format_validation_error(e)}", file=sys.stderr)
        return 2
    except (ValueError, RunFileError, ConfigMismatchError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return campaign, shared, configs, checked


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "sbi-rounds campaign",
    flow: Callable[..., Any] | None = None,
) -> int:
    """Command-line entry point. Returns 0 done, 1 an observation failed, 2 bad input, 130
    stopped."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    resolved = _settings(args)
    if isinstance(resolved, int):
        return resolved
    campaign, shared, configs, checked = resolved
    if getattr(args, "print_config", False):
        set_path(shared, "campaign", campaign.model_dump(mode="json"))
        print(yaml.safe_dump(shared, sort_keys=False), end="")
        return 0
    resume = f"{prog} " + shlex.join(argv)
    status = _run(campaign, shared, checked, resume, flow, verbosity(args))
    if TIME_LIMIT.reached:  # every run is closed, their locks free for the job that continues
        continue_in_new_job(configs[0].continuation, resume)
    return status


def _run(
    campaign: CampaignConfig,
    shared: dict[str, Any],
    checked: list[Preflight],
    resume: str,
    flow: Callable[..., Any] | None,
    level: int = 0,
) -> int:
    """Start Prefect's server, run the campaign flow, and say how it ended.

    The console is the run command's (``-q``/``-v``): its runs' progress lines, round
    summaries and warnings, each behind its run's id, without Prefect's per-task lines or
    Dask's start-up commands.
    """
    from flows.cli.console import (
        adopt_prefect_logging,
        failures_as_one_line,
        install_console,
        quiet_dask_workers,
    )
    from flows.server import temporary_server

    install_console(level, run_threads=RUN_THREAD_PREFIX)
    with interrupts(), failures_as_one_line(level), quiet_dask_workers(level):
        try:
            check_time_limit()
            if flow is None:
                from flows.campaign import campaign_inference as flow
            adopt_prefect_logging()
            with temporary_server():
                result = flow(campaign, shared, preflights=checked)
        except KeyboardInterrupt:
            why = " at the batch job's time limit (SIGUSR1)" if TIME_LIMIT.reached else ""
            print(
                f"\nStopped{why}. Everything committed is saved under {campaign.directory}."
                f"\nResume with:\n  {resume}",
                file=sys.stderr,
                flush=True,
            )
            return 130
        except Exception as e:  # noqa: BLE001 - user-facing errors are printed without traceback
            from flows.server import ServerStartError
            from sbi_rounds.cluster import ClusterError

            if not isinstance(e, (ClusterError, ImportError, ServerStartError)):
                raise
            print(f"error: {e}", file=sys.stderr)
            return 1
    if level < 0:  # else the flow's own log line has said it
        print(f"\ncampaign summary: {result['summary']}")
    for name, error in result["failed"].items():
        print(f"error: observation {name} failed: {error}", file=sys.stderr)
    if result["failed"]:
        print(f"After fixing it, resume with:\n  {resume}", file=sys.stderr)
        return 1
    return 0
