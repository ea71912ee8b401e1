"""Where settings come from, resolved in one place: flag > environment > config file > default.

Each source gives a nested dict of the settings it sets (``{"training": {"batch_size":
100}}``); :func:`resolve` merges them, highest first, and validates the result as a
:class:`~sbi_rounds.config.RunConfig`. Environment variables are ``SBI_ROUNDS_`` and the
setting's path in capitals, with ``__`` between sections: ``SBI_ROUNDS_ROUNDS=5``,
``SBI_ROUNDS_TRAINING__BATCH_SIZE=100``, ``SBI_ROUNDS_XOBS="0.5 -0.3"``. ``SBI_ROUNDS_CONFIG``
names a config file when no ``--config`` is given.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sbi_rounds.config.fields import Setting, settings_of
from sbi_rounds.config.files import load_config_file
from sbi_rounds.config.run import RunConfig

__all__ = [
    "ENV_CONFIG",
    "ENV_PREFIX",
    "env_name",
    "env_settings",
    "merge",
    "resolve",
    "parse_env_value",
    "set_path",
    "xobs_value",
]

ENV_PREFIX = "SBI_ROUNDS_"
#: The environment variable naming a config file (``--config`` wins over it).
ENV_CONFIG = f"{ENV_PREFIX}CONFIG"

#: Settings that, given in a source, imply others in the same source unless it sets them too:
#: an address means that kind of cluster; a command means a command simulator.
IMPLIED: dict[str, dict[str, Any]] = {
    "cluster.address": {"cluster.kind": "address"},
    "cluster.scheduler_file": {"cluster.kind": "scheduler_file"},
    "simulator.command": {"simulator.kind": "command", "simulator.path": None},
}
#: Sections holding one of two kinds of settings: a source that sets one kind replaces the
#: section of the sources below it instead of merging into it (a prior given as
#: ``module:function`` on the command line replaces box bounds from the config file).
EXCLUSIVE: dict[str, tuple[frozenset[str], ...]] = {
    "prior": (frozenset({"path"}), frozenset({"low", "high"})),
}


def env_name(setting: Setting) -> str:
    """``SBI_ROUNDS_TRAINING__BATCH_SIZE`` for ``training.batch_size``."""
    return ENV_PREFIX + "__".join(setting.path).upper()


def set_path(data: dict[str, Any], path: tuple[str, ...] | str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for the path ``a.b.c``, creating the sections."""
    *parents, leaf = path.split(".") if isinstance(path, str) else path
    node = data
    for key in parents:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"setting {key!r} must be a mapping of settings, got {child!r}")
        node = child
    node[leaf] = value


def _get_path(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


def xobs_value(words: list[str], source: str = "--xobs") -> Any:
    """The observation from words: numbers, or one file path (``RunConfig`` loads it)."""
    try:
        return [float(w) for w in words]
    except ValueError:
        if len(words) == 1:
            return words[0]
        raise ValueError(
            f"{source} takes numbers or one file path, got {' '.join(words)!r}; e.g. "
            f"{source} 0.5 -0.3 or {source} obs.npy"
        ) from None


def parse_env_value(setting: Setting, text: str) -> Any:
    """The value of an environment variable for ``setting``, as a config file would hold it.

    Lists are YAML (``[0.5, -0.3]``) or words separated by spaces (``0.5 -0.3``); a command
    is split like a shell line; a mapping is YAML (``{noise: 0.1}``); ``none`` is None for
    a setting that may be None. Other values are given to the model as text, which converts
    them (``5``, ``true``, ``1e-4``).
    """
    kind = setting.kind()
    stripped = text.strip()
    if kind.optional and stripped.lower() in ("none", "null"):
        return None
    if kind.mapping or (kind.is_list and stripped.startswith("[")):
        return yaml.safe_load(stripped)
    if setting.path == ("simulator", "command"):
        return shlex.split(stripped)
    if setting.path == ("xobs",):
        return xobs_value(stripped.split(), env_name(setting))
    if kind.is_list:
        words = stripped.split()
        return words[0] if kind.single and len(words) == 1 else words
    return stripped


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings that ``SBI_ROUNDS_*`` variables in ``environ`` set, as a nested dict.

    Variables that name no setting (``SBI_ROUNDS_INPUT`` of an external simulator's
    protocol, say) are left alone.
    """
    data: dict[str, Any] = {}
    for setting in settings_of(RunConfig):
        name = env_name(setting)
        if name in environ:
            set_path(data, setting.path, parse_env_value(setting, environ[name]))
    return data


def _with_implied(source: dict[str, Any]) -> dict[str, Any]:
    for given, implied in IMPLIED.items():
        if _get_path(source, given)[0]:
            for dotted, value in implied.items():
                if not _get_path(source, dotted)[0]:
                    set_path(source, dotted, value)
    return source


def _merge_into(base: dict[str, Any], top: Mapping[str, Any], prefix: str = "") -> None:
    for key, value in top.items():
        path = f"{prefix}{key}"
        below = base.get(key)
        if isinstance(value, dict) and isinstance(below, dict) and not value:
            continue
        if isinstance(value, dict) and isinstance(below, dict):
            kinds = EXCLUSIVE.get(path)
            if kinds and any(set(value) & kind for kind in kinds):
                given = next(kind for kind in kinds if set(value) & kind)
                below = {k: v for k, v in below.items() if k in given}
                base[key] = below
            _merge_into(below, value, f"{path}.")
        else:
            base[key] = value


def merge(*sources: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested settings dicts; later sources win, section by section."""
    merged: dict[str, Any] = {}
    for source in sources:
        _merge_into(merged, _with_implied(dict(_copy(source))))
    return merged


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def resolve(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> RunConfig:
    """The run's settings: ``flags`` over ``environ``'s over the config file's over defaults.

    Args:
        flags: Settings given on the command line, nested (only those given).
        environ: The environment (``os.environ``), read for ``SBI_ROUNDS_*`` settings and,
            when ``config_file`` is None, ``SBI_ROUNDS_CONFIG``.
        config_file: A YAML or TOML settings file.

    Raises:
        ValueError: A config file that cannot be read, or no observation at all.
        pydantic.ValidationError: A setting with a wrong value; its message names it.
    """
    environ = environ or {}
    path = config_file if config_file is not None else environ.get(ENV_CONFIG)
    from_file = load_config_file(path) if path else {}
    data = merge(from_file, env_settings(environ), flags or {})
    if "xobs" not in data:
        raise ValueError(
            "give the observation: --xobs 0.5 -0.3 (or xobs: in the --config file, or "
            "SBI_ROUNDS_XOBS)"
        )
    return RunConfig.model_validate(data)
