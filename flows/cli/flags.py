"""Command-line flags generated from the settings model: one flag per setting, no copies.

Every leaf setting of :class:`~sbi_rounds.config.RunConfig` becomes a flag named by its
path (``--training.batch-size``), with the field's description and default as help and
its type and choices as checks. The short flags users know are aliases
(``--batch-size``); a few flags set two settings at once (``--num-atoms``, ``--adapt``).
Only flags given on the command line reach the settings, so flags override the
environment and the config file (see ``sbi_rounds.config.sources``, whose environment and
file sources are pydantic-settings').

Why argparse here and not pydantic-settings' ``CliSettingsSource`` (measured with 2.14.1:
``CliApp.run`` on a ``BaseSettings`` over ``RunConfig`` with ``cli_kebab_case``,
``cli_implicit_flags``, ``cli_parse_none_str="none"`` and :data:`ALIASES` as
``cli_shortcuts``): the documented ``--xobs 0.5 -0.3``, ``--low -1 -1 --high 1 1`` and
``--simulations-per-round 100 200`` fail ("unrecognized arguments"; its lists are
``[0.5,-0.3]``, ``0.5,-0.3`` or a repeated flag), ``--low -1e3,-1`` fails ("expected one
argument"), ``--num-atoms``/``--adapt`` (one flag, two settings) have no equivalent,
``none`` for None makes ``--network.z-score-x none`` (a choice named none) invalid,
``--simulator.kwargs noise=0.2`` gives the text ``'0.2'`` and ``--simulator.command
"prog {input} {output}"`` one word. Its help is 746 lines against this one's 580, with
types for placeholders (``{int,auto}``, ``list[float]``). Aliases, ``--no-`` booleans,
unknown flags and wrong values it does as well.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any

import yaml

from sbi_rounds.config import RunConfig
from sbi_rounds.config.fields import Setting, settings_of
from sbi_rounds.config.sources import set_path, xobs_value

__all__ = [
    "ALIASES",
    "COMBINED",
    "METAVARS",
    "HelpFormatter",
    "add_setting_flags",
    "add_verbosity_flags",
    "setting_argument",
    "flag_name",
    "setting_values",
    "verbosity",
]

#: The short flags of settings (shown first in the help).
ALIASES: dict[str, tuple[str, ...]] = {
    "simulator.path": ("--simulator",),
    "simulator.kind": ("--simulator-kind",),
    "simulator.command": ("--simulator-command",),
    "prior.path": ("--prior",),
    "prior.low": ("--low",),
    "prior.high": ("--high",),
    "network.model": ("--network",),
    "network.hidden_features": ("--hidden-features",),
    "network.num_transforms": ("--num-transforms",),
    "network.num_bins": ("--num-bins",),
    "network.embedding_net": ("--embedding-net",),
    "nre.variant": ("--nre-variant",),
    "tsnpe.quantile": ("--truncation-quantile",),
    "training.device": ("--device",),
    "training.batch_size": ("--batch-size",),
    "training.learning_rate": ("--learning-rate",),
    "training.max_epochs": ("--max-epochs",),
    "training.patience": ("--patience",),
    "logger.backend": ("--logger",),
    "logger.uri": ("--logger-uri",),
    "posterior.num_samples": ("--num-samples",),
    "posterior.sampler": ("--sampler",),
    "posterior.num_chains": ("--num-chains",),
    "posterior.thin": ("--thin",),
    "posterior.warmup_steps": ("--warmup-steps",),
    "posterior.init_strategy": ("--init-strategy",),
    "posterior.mcmc_workers": ("--mcmc-workers",),
    "posterior.max_sampling_seconds": ("--max-sampling-seconds",),
    "diagnostics.predictive_simulations": ("--predictive-simulations",),
    "diagnostics.predictive_alpha": ("--predictive-alpha",),
    "diagnostics.map_iterations": ("--map-iterations",),
    "diagnostics.calibration_simulations": ("--calibration-simulations",),
    "diagnostics.calibration_posterior_samples": ("--calibration-posterior-samples",),
    "diagnostics.reference": ("--reference",),
    "diagnostics.true_parameters": ("--true-parameters",),
    "diagnostics.stop_when_stable": ("--stop-when-stable",),
    "cluster.kind": ("--cluster",),
    "cluster.workers": ("--workers",),
    "cluster.threads_per_worker": ("--threads-per-worker",),
    "cluster.dashboard": ("--dashboard",),
    "cluster.address": ("--dask-address",),
    "cluster.scheduler_file": ("--scheduler-file",),
    "cluster.jobqueue.jobs": ("--jobs",),
    "cluster.jobqueue.walltime": ("--walltime",),
    "cluster.jobqueue.queue": ("--queue",),
    "cluster.jobqueue.account": ("--account",),
    "cluster.chunk_size": ("--chunk-size",),
    "cluster.chunk_seconds": ("--chunk-seconds",),
    "cluster.max_in_flight": ("--max-in-flight",),
    "cluster.retries": ("--retries",),
    "cluster.chunk_timeout": ("--chunk-timeout",),
    "cluster.commit_interval": ("--commit-interval",),
    "cluster.min_valid_fraction": ("--min-valid-fraction",),
    "continuation.max_continuations": ("--max-continuations",),
}

#: Flags that set several settings at once: flag -> (settings, metavar, help).
COMBINED: dict[str, tuple[tuple[str, ...], tuple[str, ...] | str, str]] = {
    "--num-atoms": (
        ("npe.num_atoms", "nre.num_atoms"),
        "N",
        "atoms of SNPE's and NRE-B's loss: sets npe.num_atoms and nre.num_atoms",
    ),
    "--adapt": (
        ("cluster.jobqueue.minimum_jobs", "cluster.jobqueue.maximum_jobs"),
        ("MIN", "MAX"),
        "batch jobs scale between MIN and MAX: sets cluster.jobqueue.minimum_jobs and maximum_jobs",
    ),
}

_METAVARS = {int: "N", float: "X", str: "TEXT", bool: "BOOL"}
#: Placeholders in the help where the type's (N, X, TEXT) says too little.
METAVARS = {
    "simulator.path": "MODULE:FUNCTION",
    "prior.path": "MODULE:FUNCTION",
    "network.embedding_net": "MODULE:FUNCTION",
    "prior.low": "L",
    "prior.high": "H",
    "parameter_names": "NAME",
    "diagnostics.true_parameters": "V",
    "diagnostics.reference": "FILE",
    "cluster.address": "TCP://HOST:PORT",
    "cluster.scheduler_file": "FILE",
    "run_dir": "DIR",
    "run_id": "ID",
}
_PREFIX = "setting:"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Argparse's help, with a flag's names listed once before its value:
    ``--batch-size, --training.batch-size N``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(action.option_strings) + " " + value


def flag_name(setting: Setting) -> str:
    """``--training.batch-size`` for ``training.batch_size``."""
    return "--" + ".".join(p.replace("_", "-") for p in setting.path)


def _converter(scalar: type, optional: bool) -> Callable[[str], Any]:
    """An argparse ``type``: the value as ``scalar``, ``none`` as None when ``optional``."""

    def convert(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        return scalar(text)

    convert.__name__ = scalar.__name__  # argparse: "invalid int value: 'x'"
    return convert


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(text)
    return key, yaml.safe_load(value)


_key_value.__name__ = "KEY=VALUE"


def _choice(choices: tuple[Any, ...], scalar: type | None) -> Callable[[str], Any]:
    """An argparse ``type`` for a literal setting that may also take a number."""

    def convert(text: str) -> Any:
        if text in choices:
            return text
        if scalar is not None:
            return scalar(text)
        raise ValueError(text)

    convert.__name__ = "choice"
    return convert


def _choice_or_bool(choices: list[str]) -> Callable[[str], Any]:
    """An argparse ``type`` for a setting that takes a literal or a boolean."""

    def convert(text: str) -> Any:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        if text in choices:
            return text
        raise argparse.ArgumentTypeError(f"{text!r}; choose from {', '.join(choices)}")

    return convert


def setting_argument(setting: Setting) -> dict[str, Any]:
    """The ``add_argument`` keywords of one setting."""
    kind = setting.kind()
    spec: dict[str, Any] = {"help": setting.help, "dest": _PREFIX + setting.dotted}
    if setting.path == ("simulator", "command"):
        return {**spec, "metavar": "CMD", "type": shlex.split}
    if setting.path == ("xobs",):
        return {**spec, "nargs": "+", "metavar": "X"}
    if kind.mapping:
        return {**spec, "nargs": "+", "metavar": "KEY=VALUE", "type": _key_value}
    if kind.scalar is bool and not kind.is_list:
        if not kind.choices:
            return {**spec, "action": argparse.BooleanOptionalAction}
        choices = [*kind.choices, "true", "false"]  # retrain_from_scratch: auto, true, false
        return {**spec, "metavar": "{" + ",".join(choices) + "}", "type": _choice_or_bool(choices)}
    if kind.choices:
        choices = [*kind.choices, *(["none"] if kind.optional else [])]
        number = kind.scalar if kind.scalar in (int, float) and kind.single else None
        if number is None:
            spec = {**spec, "choices": choices, "type": _choice(tuple(choices), None)}
            if len(choices) > 6:  # the description names them; the usage stays short
                spec["metavar"] = setting.path[-1].upper()
            return spec
        metavar = "{" + ",".join(map(str, choices)) + "," + _METAVARS[number] + "}"
        return {**spec, "metavar": metavar, "type": _choice(tuple(choices), number)}
    spec["type"] = _converter(kind.scalar, kind.optional)
    spec["metavar"] = METAVARS.get(setting.dotted, _METAVARS.get(kind.scalar, "TEXT"))
    if kind.is_list:
        spec["nargs"] = "+"
    return spec


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every setting of ``RunConfig``, grouped by section, and the aliases."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in settings_of(RunConfig):
        section = setting.section
        if section not in groups:
            groups[section] = parser.add_argument_group(f"settings: {section.lower()}")
        names = [*ALIASES.get(setting.dotted, ()), flag_name(setting)]
        groups[section].add_argument(*names, **setting_argument(setting))
    combined = parser.add_argument_group("settings: combined")
    for flag, (_, metavar, text) in COMBINED.items():
        nargs = len(metavar) if isinstance(metavar, tuple) else None
        combined.add_argument(
            flag, type=int, nargs=nargs, metavar=metavar, help=text, dest=_PREFIX + flag
        )


def _value(setting: Setting, value: Any) -> Any:
    """The value a flag gave, as the settings hold it."""
    kind = setting.kind()
    if kind.optional and value == "none" and "none" not in kind.choices:
        return None  # a choice setting that may be empty: --network none
    if setting.path == ("xobs",):
        return xobs_value(value)
    if kind.mapping:
        return dict(value)
    if kind.is_list and kind.single and isinstance(value, list) and len(value) == 1:
        return value[0]  # simulations_per_round: one number for every round
    return value


def setting_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the given flags set, as a nested dict (flags not given are absent).

    Raises:
        ValueError: A value no setting takes (``--xobs a b``).
    """
    given = {k.removeprefix(_PREFIX): v for k, v in vars(args).items() if k.startswith(_PREFIX)}
    data: dict[str, Any] = {}
    for flag, (paths, _, _) in COMBINED.items():
        if flag in given:
            value = given.pop(flag)
            values = value if isinstance(value, list) else [value] * len(paths)
            for path, v in zip(paths, values, strict=True):
                set_path(data, path, v)
    for setting in settings_of(RunConfig):
        if setting.dotted in given:
            set_path(data, setting.path, _value(setting, given[setting.dotted]))
    return data


def add_verbosity_flags(group: argparse._ArgumentGroup, what: str = "the run") -> None:
    """``-q/--quiet`` and ``-v/--verbose`` (repeatable); read them with :func:`verbosity`."""
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help=f"print only warnings, errors and the paths of what {what} wrote",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="-v: also Prefect's and Dask's own lines, with times and logger names, and "
        "tracebacks; -vv: also every epoch's losses (DEBUG)",
    )


def verbosity(args: argparse.Namespace) -> int:
    """-1 (``-q``), 0 (default), 1 (``-v``) or 2 and up (``-vv``) from :func:`add_verbosity_flags`'s
    flags (parsed with ``argument_default=SUPPRESS``)."""
    return -1 if getattr(args, "quiet", False) else int(getattr(args, "verbose", 0) or 0)
