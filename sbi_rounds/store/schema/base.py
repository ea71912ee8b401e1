"""The records' base model, their attribute names in the run file, and how they are encoded."""

from __future__ import annotations

import json
from functools import cache
from typing import Any, TypeVar

import h5py
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, model_validator

__all__ = [
    "CALIBRATION",
    "DIAGNOSTICS",
    "PAIRPLOT",
    "POSTERIOR_SUMMARY",
    "PRIOR_MASS",
    "READING",
    "SECONDS_PER_SIMULATION",
    "TRAINING_ATTEMPTS",
    "TRAINING_SUMMARY",
    "Record",
    "optional_field",
    "read_attr",
    "write_attr",
]

# The attributes of a round's group that hold records (the file format: never rename).
SECONDS_PER_SIMULATION = "seconds_per_simulation"
TRAINING_ATTEMPTS = "training_attempts"
TRAINING_SUMMARY = "training_summary"
POSTERIOR_SUMMARY = "posterior_summary"
PAIRPLOT = "pairplot"
PRIOR_MASS = "prior_mass"
DIAGNOSTICS = "diagnostics"
CALIBRATION = "calibration"

#: The validation context of records read from a file (see ``sbi_rounds.store.schema``).
READING = {"reading": True}

T = TypeVar("T")


def _is_none(value: Any) -> bool:
    return value is None


def optional_field(description: str) -> Any:
    """A field that is None by default and left out of the JSON when None, as older
    versions wrote it (absent, not null)."""
    return Field(default=None, exclude_if=_is_none, description=description)


class Record(BaseModel):
    """Base of the records: frozen, unknown fields refused, except when read from a file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_when_reading(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context is not None and info.context.get("reading"):
            return {k: v for k, v in data.items() if k in cls.model_fields}
        return data


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def write_attr(group: h5py.Group, name: str, kind: type[T] | Any, value: T) -> None:
    """Store ``value`` (validated as ``kind``) as the JSON attribute ``name`` of ``group``.

    Raises:
        pydantic.ValidationError: ``value`` is not a ``kind``: the error names the field.
    """
    adapter = _adapter(kind)
    checked = adapter.validate_python(value)
    group.attrs[name] = json.dumps(adapter.dump_python(checked), sort_keys=True)


def read_attr(group: h5py.Group, name: str, kind: type[T] | Any) -> T | None:
    """The JSON attribute ``name`` of ``group`` read as ``kind``; None when it is absent or
    null (a null ``pairplot``: none drawn)."""
    raw = group.attrs.get(name)
    if raw is None:
        return None
    value = json.loads(raw)
    return None if value is None else _adapter(kind).validate_python(value, context=READING)
