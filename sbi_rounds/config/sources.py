"""Where settings come from, resolved in one place: flag > environment > config file > default.

The sources are pydantic-settings' own, highest first as its ``settings_customise_sources``
orders them: the flags given (an ``InitSettingsSource``), the environment
(:class:`EnvironmentSource`, an ``EnvSettingsSource``) and the config file
(``YamlConfigSettingsSource`` or ``TomlConfigSettingsSource``, see
``sbi_rounds.config.files``). Each gives a nested dict of the settings it sets
(``{"training": {"batch_size": 100}}``); :func:`merge` merges them section by section and
:func:`resolve` validates the result as a :class:`~sbi_rounds.config.RunConfig`.

Environment variables are ``SBI_ROUNDS_`` and the setting's path, with ``__`` between
sections: ``SBI_ROUNDS_ROUNDS=5``, ``SBI_ROUNDS_TRAINING__BATCH_SIZE=100``,
``SBI_ROUNDS_XOBS="0.5 -0.3"``. ``SBI_ROUNDS_CONFIG`` names a config file when no
``--config`` is given. The command line's flags are argparse's, generated from the same
fields; its ``flags`` module says, measured, why not pydantic-settings' ``CliSettingsSource``.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, InitSettingsSource, PydanticBaseSettingsSource

from sbi_rounds.config.fields import Setting, settings_of
from sbi_rounds.config.files import config_file_source
from sbi_rounds.config.run import RunConfig

__all__ = [
    "ENV_CONFIG",
    "ENV_PREFIX",
    "IMPLIED",
    "EnvironmentSource",
    "env_name",
    "env_settings",
    "merge",
    "parse_env_value",
    "resolve",
    "set_path",
    "sources",
    "xobs_value",
]

ENV_PREFIX = "SBI_ROUNDS_"
#: The environment variable naming a config file (``--config`` wins over it).
ENV_CONFIG = f"{ENV_PREFIX}CONFIG"

#: Settings that, given in a source, imply others in the same source unless it sets them too:
#: an address means that kind of cluster; a command means a command simulator; a prior
#: given as ``module:function`` replaces box bounds from a lower source, and bounds a path.
IMPLIED: dict[str, dict[str, Any]] = {
    "cluster.address": {"cluster.kind": "address"},
    "cluster.scheduler_file": {"cluster.kind": "scheduler_file"},
    "simulator.command": {"simulator.kind": "command", "simulator.path": None},
    "prior.path": {"prior.low": None, "prior.high": None},
    "prior.low": {"prior.path": None},
    "prior.high": {"prior.path": None},
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


def _get_path(data: Mapping[str, Any], path: tuple[str, ...] | str) -> tuple[bool, Any]:
    node: Any = data
    for key in path.split(".") if isinstance(path, str) else path:
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


@functools.cache
def _settings(model: type[BaseModel]) -> tuple[Setting, ...]:
    return tuple(settings_of(model))


class EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping: ``SBI_ROUNDS_`` and a
    setting's path with ``__`` between sections (any case), values read as a user types them
    (:func:`parse_env_value`: ``0.5 -0.3``, ``none``, a shell line) rather than as JSON.

    Variables that name no field (``SBI_ROUNDS_INPUT`` of an external simulator's protocol)
    are left alone; a misspelled setting inside a section (``SBI_ROUNDS_TRAINING__BACH_SIZE``)
    is an unknown setting, named by the validation.

    Args:
        model: The settings model (``RunConfig``, ``CampaignConfig``).
        environ: The environment, e.g. ``os.environ``.
        prefix: The variables' prefix.
    """

    def __init__(
        self, model: type[BaseModel], environ: Mapping[str, str], prefix: str = ENV_PREFIX
    ) -> None:
        super().__init__(
            model,  # type: ignore[arg-type] - a plain model: only its fields are read
            case_sensitive=False,
            env_prefix=prefix,
            env_nested_delimiter="__",
        )
        self.env_vars = {name.lower(): value for name, value in environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        """A whole section's value is YAML (``SBI_ROUNDS_TRAINING='{batch_size: 10}'``; else
        the validation names it); a list or mapping setting's stays text for
        :func:`parse_env_value`."""
        nested = field is not None and any(
            isinstance(t, type) and issubclass(t, BaseModel)
            for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
        )
        if not nested or not isinstance(value, str):
            return value
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for setting in _settings(self.settings_cls) if data else ():
            found, value = _get_path(data, setting.path)
            if found and isinstance(value, str):
                set_path(data, setting.path, parse_env_value(setting, value))
            elif found and isinstance(value, dict) and setting.kind().mapping:  # ...__KWARGS__K=v
                typed = {
                    k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in value.items()
                }
                set_path(data, setting.path, typed)
        return data


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings that ``SBI_ROUNDS_*`` variables in ``environ`` set, as a nested dict."""
    return EnvironmentSource(RunConfig, environ)()


def _with_implied(source: dict[str, Any]) -> dict[str, Any]:
    given = {dotted for dotted in IMPLIED if _get_path(source, dotted)[0]}
    for dotted in given:
        for other, value in IMPLIED[dotted].items():
            if not _get_path(source, other)[0]:
                set_path(source, other, value)
    return source


def _merge_into(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        below = base.get(key)
        if isinstance(value, Mapping) and isinstance(below, dict):
            _merge_into(below, value)
        else:
            base[key] = _copy(value) if isinstance(value, Mapping) else value
    return base


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def merge(*sources: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested settings dicts, lowest first: later sources win, section by section, each
    with the settings its own imply (:data:`IMPLIED`)."""
    merged: dict[str, Any] = {}
    for source in sources:
        _merge_into(merged, _with_implied(_copy(source)))
    return merged


def sources(
    flags: Mapping[str, Any] | None, environ: Mapping[str, str], config_file: str | Path | None
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of ``RunConfig``, highest first: flags, environment, config file
    (``config_file``, else the one ``SBI_ROUNDS_CONFIG`` names, if any)."""
    path = config_file if config_file is not None else environ.get(ENV_CONFIG)
    found: list[PydanticBaseSettingsSource] = [
        InitSettingsSource(RunConfig, dict(flags or {})),  # type: ignore[arg-type]
        EnvironmentSource(RunConfig, environ),
    ]
    if path:
        found.append(config_file_source(path, RunConfig))
    return tuple(found)


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
    data = merge(*(source() for source in reversed(sources(flags, environ or {}, config_file))))
    if "xobs" not in data:
        raise ValueError(
            "give the observation: --xobs 0.5 -0.3 (or xobs: in the --config file, or "
            "SBI_ROUNDS_XOBS)"
        )
    return RunConfig.model_validate(data)
