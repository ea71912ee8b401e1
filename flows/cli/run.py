"""``sbi-rounds run`` (and ``python -m flows.online``): settings from flags, run the flow.

Settings resolve flag > environment (``SBI_ROUNDS_*``) > config file > default, in
``sbi_rounds.config.sources``. Bad input fails in a second with one line and status 2,
before Prefect and Dask start; a stopped run exits with status 130 and prints the command
that resumes it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import textwrap
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from flows.cli.continuation import continue_in_new_job, wait_for_previous_job
from flows.cli.flags import (
    HelpFormatter,
    add_setting_flags,
    add_verbosity_flags,
    setting_values,
    verbosity,
)
from flows.cli.signals import TIME_LIMIT, check_time_limit, interrupts, quiet_prefect_client
from flows.cli.sys_path import working_directory_last
from sbi_rounds.config import ALL_IDENTITY_FIELDS, RunConfig, format_validation_error
from sbi_rounds.config.sources import ENV_CONFIG, ENV_PREFIX, resolve
from sbi_rounds.errors import ConfigMismatchError
from sbi_rounds.lifecycle.locking import RunLockedError
from sbi_rounds.methods import METHODS
from sbi_rounds.store import RunFileError

if TYPE_CHECKING:
    from sbi_rounds.lifecycle.preflight import Preflight

__all__ = ["build_config", "main", "parse_args", "parser"]

DESCRIPTION = (
    f"Multi-round simulation-based inference ({', '.join(m.upper() for m in METHODS)}) as a "
    "resumable Prefect flow. Rerun the same command to resume an interrupted run or, with more "
    "--rounds, to extend a finished one. Every setting has a flag (its path in the "
    "settings, --training.batch-size; the usual ones also a short name, --batch-size), an "
    "environment variable and a place in a --config file."
)
EPILOG = f"""\
where settings come from: a flag, else an environment variable, else the --config file
(or the file {ENV_CONFIG} names), else the default shown. Environment variables are
{ENV_PREFIX} and the setting's path in capitals, with __ between sections:
  {ENV_PREFIX}ROUNDS=5  {ENV_PREFIX}TRAINING__BATCH_SIZE=100  {ENV_PREFIX}XOBS="0.5 -0.3"
A setting that may be none takes the word none (--max-epochs none). --print-config shows
the resolved settings as YAML, ready to save and use with --config.
"""


def parser(prog: str = "sbi-rounds run") -> argparse.ArgumentParser:
    """The command line of a run: run options, then one flag per setting."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # a shortened flag (--round for --rounds) is an error, not a guess
        prog=prog,
        description=textwrap.fill(DESCRIPTION, 88),
        epilog=EPILOG,
        usage="%(prog)s [--config FILE] [--print-config] [--xobs X ...] [SETTING ...]",
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("run options")
    g.add_argument(
        "--config",
        metavar="FILE.yaml|toml",
        help="settings file (the names of sbi_rounds.RunConfig); flags and environment "
        "variables override it",
    )
    g.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings as YAML and exit (save them to use with --config)",
    )
    g.add_argument(
        "--allow-change",
        action="append",
        choices=list(ALL_IDENTITY_FIELDS),
        metavar="SETTING",
        help="resume although this identity setting changed (repeatable; one of "
        f"{', '.join(ALL_IDENTITY_FIELDS)})",
    )
    g.add_argument(
        "--accept-changed-code",
        action="store_true",
        help="resume although the simulator's or prior's code changed since the run recorded "
        "it: the change is recorded in the run's history, and the invalid rows of a round "
        "not trained yet are simulated again",
    )
    g.add_argument(
        "--resimulate-invalid",
        action="store_true",
        help="simulate again the invalid (NaN/inf) rows of a round not trained yet, e.g. "
        "after fixing the simulator",
    )
    g.add_argument(
        "--no-progress",
        action="store_true",
        help="no live display in a terminal: progress lines as in a log instead",
    )
    add_verbosity_flags(g)
    add_setting_flags(p)
    return p


def parse_args(
    argv: Sequence[str] | None = None, prog: str = "sbi-rounds run"
) -> argparse.Namespace:
    """Parse command-line arguments (only the flags given appear in the namespace).

    Negative numbers in every form are values, not options: ``--low -1e3 -inf`` (argparse
    alone takes only ``-1`` and ``-1.5`` for numbers).
    """
    argv = sys.argv[1:] if argv is None else argv
    return parser(prog).parse_args([_as_value(a) for a in argv])


#: A negative number that argparse would take for an option: ``-1e3``, ``-inf``, ``-nan``.
_NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*[eE][-+]?\d+|\.\d+[eE][-+]?\d+|inf|infinity|nan)$", re.I
)


def _as_value(arg: str) -> str:
    """``arg``, with a leading space if it is a negative number argparse would take for an
    option (``float`` ignores the space)."""
    return " " + arg if _NEGATIVE_NUMBER.match(arg) else arg


def build_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RunConfig:
    """The validated settings: flags over environment variables over the config file.

    Args:
        args: Parsed arguments (:func:`parse_args`).
        environ: The environment; default ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    return resolve(setting_values(args), environ, getattr(args, "config", None))


def _resume_command(prog: str, argv: Sequence[str], config: RunConfig) -> str:
    args = list(argv)
    if "--run-id" not in args:
        args += ["--run-id", config.resolved_run_id]
    return f"{prog} " + shlex.join(args)


def _settings(args: argparse.Namespace) -> RunConfig | int:
    """The run's settings, or the exit status of bad input (2)."""
    try:
        return build_config(args)
    except ValidationError as e:
        print(f"error: {format_validation_error(e)}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _preflight(config: RunConfig, args: argparse.Namespace) -> Preflight | int:
    """The run's preflight (handed to the flow), or the exit status of bad input (2)."""
    from sbi_rounds.lifecycle.preflight import preflight

    wait_for_previous_job([config.run_path])  # a continuation of a requeued batch job
    try:  # bad input fails here, in a second, before Prefect and Dask start
        return preflight(
            config,
            allow_changes=getattr(args, "allow_change", None) or (),
            accept_changed_code=getattr(args, "accept_changed_code", False),
        )
    except (RunFileError, ConfigMismatchError, RunLockedError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def print_config(config: RunConfig) -> None:
    """The resolved settings as YAML, ready to save and use with ``--config``."""
    print("# sbi-rounds settings: sbi-rounds run --config THIS_FILE")
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")


def _space(config: RunConfig) -> str:
    """``; X MB free, about Y MB needed ...`` for the round a resume continues with."""
    from sbi_rounds.lifecycle.environment import disk_space_text

    try:
        return f"; {disk_space_text(config)}"
    except (OSError, RunFileError):  # the run file cannot tell
        return ""


def stopped(config: RunConfig, resume: str, *, cancelled: bool = False) -> None:
    """Say that the run stopped, why, where its results are and how to resume it."""
    if cancelled:
        how = "Cancelled from Prefect"
    elif TIME_LIMIT.reached:
        how = "Stopped at the batch job's time limit (SIGUSR1)"
    else:
        how = "Stopped"
    saved = (
        f"Everything committed is saved in {config.run_path}."
        if config.run_path.exists()
        else "The run had not started: nothing was written."
    )
    print(f"\n{how}. {saved}\nResume with:\n  {resume}", file=sys.stderr, flush=True)


def _failure(
    e: BaseException, resume: str, config: RunConfig | None = None, *, verbose: bool = False
) -> int | None:
    """The exit status and message of an error the user can act on (None: a bug, raise).

    A full disk names the free and needed space of ``config``'s run directory; a failed
    chunk, the first line of the simulator's error (``verbose``: all of it)."""
    from sbi_rounds.cluster import ClusterError
    from sbi_rounds.errors import InvalidRoundError, LeakageError
    from sbi_rounds.lifecycle.environment import is_disk_error, is_disk_full
    from sbi_rounds.simulation import SimulationFailed

    if is_disk_error(e):
        what = getattr(e, "filename", None) or "the run file"
        space = _space(config) if config is not None and is_disk_full(e) else ""
        print(
            f"error: could not write {what}: {' '.join(str(e).split())}{space}. Everything "
            f"committed before is kept; make room (or fix the permissions), then resume "
            f"with:\n  {resume}",
            file=sys.stderr,
        )
        return 1
    if isinstance(e, (RunFileError, ConfigMismatchError, RunLockedError)) or (
        isinstance(e, ValueError) and not isinstance(e, ValidationError)
    ):
        print(f"error: {e}", file=sys.stderr)
        return 2
    from flows.server import ServerStartError

    if isinstance(e, (ClusterError, ImportError, ServerStartError)):
        print(f"error: {e}", file=sys.stderr)
        return 1
    if isinstance(e, InvalidRoundError):  # the committed invalid rows must be redone
        resume += " --resimulate-invalid"
    if isinstance(e, (SimulationFailed, InvalidRoundError, FloatingPointError, LeakageError)):
        message = e.summary if isinstance(e, SimulationFailed) and not verbose else e
        print(f"error: {message}\n\nAfter fixing it, resume with:\n  {resume}", file=sys.stderr)
        return 1
    return None


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "sbi-rounds run",
    flow: Callable[..., Any] | None = None,
) -> int:
    """Command-line entry point. Returns the exit status (0 done, 2 bad input, 130 stopped).

    Stopped means Ctrl-C, SIGTERM, or the flow run cancelled from the Prefect UI or API.

    Args:
        argv: The arguments; default ``sys.argv[1:]``.
        prog: How the command is called (its help and the resume command say it).
        flow: The ``online_inference`` flow; default imported from ``flows.online``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    quiet_prefect_client()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = _settings(args)
    if isinstance(config, int):
        return config
    if getattr(args, "print_config", False):
        print_config(config)
        return 0
    checked = _preflight(config, args)
    if isinstance(checked, int):
        return checked
    status = _run(config, checked, args, prog, argv, flow)
    if TIME_LIMIT.reached:  # the run is closed, its lock free for the job that continues it
        continue_in_new_job(config.continuation, _resume_command(prog, argv, config))
    return status


def _run(
    config: RunConfig,
    checked: Preflight,
    args: argparse.Namespace,
    prog: str,
    argv: Sequence[str],
    flow: Callable[..., Any] | None,
) -> int:
    """Start the cluster and Prefect's server, run the flow, and say how it ended.

    The Dask cluster starts first, from the settings alone, so that its processes come up
    (and import the simulator) while this one imports Prefect, torch and sbi for the flow.
    """
    working_directory_last()  # before the flow imports tasks
    from flows.cli.console import (
        LiveDisplay,
        adopt_prefect_logging,
        failures_as_one_line,
        install_console,
        quiet_dask_workers,
        show_run_links,
    )
    from flows.cluster import close_prestarted, prestart_cluster
    from flows.server import check_configured_server, default_server, temporary_server
    from sbi_rounds.runtime.progress import showing

    resume = _resume_command(prog, argv, config)
    level = verbosity(args)
    console = install_console(level)
    live = level >= 0 and "no_progress" not in vars(args) and sys.stderr.isatty()
    view = LiveDisplay(console, config.rounds) if live else None
    with (
        interrupts(),
        failures_as_one_line(level),
        quiet_dask_workers(level),
        showing(view) if view is not None else nullcontext(),
    ):
        try:
            check_time_limit()
            prestart_cluster(config)  # comes up while the flow imports and the server starts
            check_configured_server()  # an unreachable server is one line (cluster closed)
            if flow is None:
                from flows.online import online_inference as flow
            adopt_prefect_logging()  # importing Prefect set up its logging
            with temporary_server() as url:  # in its own process group: see flows/server.py
                show_run_links(url is None or url == default_server())
                result = flow(
                    config,
                    allow_changes=getattr(args, "allow_change", None),
                    accept_changed_code=getattr(args, "accept_changed_code", False),
                    resimulate_invalid=getattr(args, "resimulate_invalid", False),
                    preflight=checked,
                )
        except KeyboardInterrupt:
            stopped(config, resume)
            return 130
        except Exception as e:  # noqa: BLE001 - user-facing errors are printed without traceback
            if _cancelled(e):
                stopped(config, resume, cancelled=True)
                return 130
            if level >= 1:
                traceback.print_exc()
            status = _failure(e, resume, config, verbose=level >= 1)
            if status is None:
                raise
            return status
        finally:
            close_prestarted()
    _print_result(result, url, default_server(), level)
    return 0


def _print_result(result: Mapping[str, Any], url: str | None, default: str, verbosity: int) -> None:
    """The paths a finished run wrote, and how to browse it once its temporary server is gone."""
    print(f"\nrun file: {result['run_file']}")
    for path in result["pairplots"]:
        print(f"pairplot: {path}")
    if result.get("report"):
        print(f"report: {result['report']}")
    if result.get("stopped_early"):
        print(f"stopped early: {result['stopped_early']}")
    if url is not None and url != default and verbosity >= 0:
        print(_browse_later(result.get("flow_run_id")), file=sys.stderr)


def _cancelled(e: BaseException) -> bool:
    """Whether ``e`` is Prefect's ``CancelledRun`` (the flow run was cancelled)."""
    prefect_exceptions = sys.modules.get("prefect.exceptions")
    return prefect_exceptions is not None and isinstance(e, prefect_exceptions.CancelledRun)


def _browse_later(flow_run_id: Any) -> str:
    """How to see a run in the Prefect UI after its temporary server has stopped."""
    from prefect.settings import get_current_settings

    home = get_current_settings().home
    page = f"runs/flow-run/{flow_run_id}" if flow_run_id else "runs"
    return (
        "\nPrefect UI: this run's server was temporary and has stopped. To browse the run, "
        f"start one on the same database (PREFECT_HOME={home}): prefect server start, then "
        f"open http://127.0.0.1:4200/{page}. While it runs, later runs use it (and show "
        "there live)."
    )
