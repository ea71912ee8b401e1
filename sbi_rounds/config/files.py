"""Settings files (pydantic-settings' YAML and TOML sources), and the messages and
differences of settings."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

__all__ = [
    "FILE_SOURCES",
    "config_differences",
    "config_file_source",
    "format_validation_error",
    "load_config_file",
]


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like dicts differ, as ``path: old -> new`` lines."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_differences(a, b, prefix=f"{path}.")
        elif a != b:
            lines.append(f"{path}: {a!r} -> {b!r}")
    return lines


class _OneLineErrors:
    """A pydantic-settings file source whose errors are one line naming the file."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)  # type: ignore[misc]
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
            mark = getattr(e, "problem_mark", None)  # YAML's: what and where, once
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = getattr(e, "problem", None) or " ".join(str(e).split())
            kind = "TOML" if file_path.suffix == ".toml" else "YAML"
            raise ValueError(
                f"config file {str(file_path)!r} is not valid {kind}: {what}{where}"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(
                f"config file {str(file_path)!r} must hold a mapping of settings at the top"
            )
        return data


class _Yaml(_OneLineErrors, YamlConfigSettingsSource):
    """pydantic-settings' YAML source."""


class _Toml(_OneLineErrors, TomlConfigSettingsSource):
    """pydantic-settings' TOML source."""


#: The settings source of each config file suffix.
FILE_SOURCES: dict[str, Callable[[type[BaseModel], Path], PydanticBaseSettingsSource]] = {
    ".yaml": lambda model, path: _Yaml(model, yaml_file=path),  # type: ignore[arg-type]
    ".yml": lambda model, path: _Yaml(model, yaml_file=path),  # type: ignore[arg-type]
    ".toml": lambda model, path: _Toml(model, toml_file=path),  # type: ignore[arg-type]
}


def config_file_source(path: str | Path, model: type[BaseModel]) -> PydanticBaseSettingsSource:
    """pydantic-settings' source of a YAML (.yaml/.yml) or TOML (.toml) config file.

    Args:
        path: The file.
        model: The settings model, e.g. ``RunConfig``; keys it has no field for are kept
            (the validation names them, or a caller takes its own: ``campaign:``).

    Raises:
        ValueError: A file that does not exist, is of another kind, or cannot be parsed.
    """
    p = Path(path)
    if not p.is_file():  # pydantic-settings skips a missing file: here it is a mistake
        raise ValueError(f"config file {str(p)!r} does not exist")
    if p.suffix not in FILE_SOURCES:
        raise ValueError(f"config file {str(p)!r} must end in .yaml, .yml or .toml")
    return FILE_SOURCES[p.suffix](model, p)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file of ``RunConfig`` into a dict."""
    from sbi_rounds.config.run import RunConfig  # run's package imports this module first

    return config_file_source(path, RunConfig)()


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: the field's dotted path, what is wrong, and the input."""
    lines = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-")) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; see --help for the settings)"
        given = e.get("input")
        shown = "" if isinstance(given, dict) or e["type"] == "missing" else f" (got {given!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)
