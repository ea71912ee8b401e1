"""Every setting of a settings model, walked from its fields: path, type, default, help."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["Kind", "Setting", "format_value", "settings_of"]

#: The JSON scalar types a setting's value may take.
_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Kind:
    """What values a setting admits.

    Attributes:
        scalar: The type of one value (of a list's items for a list): bool, int, float, str.
        choices: The literal values it admits (``Literal[...]``), if any.
        is_list: Whether it takes a list.
        single: Whether it takes a single value (a list setting may also take one value:
            ``simulations_per_round: int | list[int]``).
        optional: Whether it may be None.
        mapping: Whether it takes a mapping (``simulator.kwargs``).
    """

    scalar: type
    choices: tuple[Any, ...]
    is_list: bool
    single: bool
    optional: bool
    mapping: bool


@dataclass(frozen=True)
class Setting:
    """One leaf setting of a model tree, e.g. ``training.batch_size``.

    Attributes:
        path: The field names from the root model down, e.g. ``("training", "batch_size")``.
        field: The pydantic field.
        default: Its default as the root model would fill it in (``PydanticUndefined``:
            required).
        section: The title of the section (the nested model's field) it belongs to.
    """

    path: tuple[str, ...]
    field: FieldInfo
    default: Any
    section: str

    @property
    def dotted(self) -> str:
        """``training.batch_size``."""
        return ".".join(self.path)

    @property
    def required(self) -> bool:
        """Whether the setting has no default."""
        return self.default is PydanticUndefined

    @property
    def help(self) -> str:
        """The field's description (or title), and its default."""
        text = (self.field.description or self.field.title or "").rstrip(".")
        if self.required:
            return f"{text} (required)"
        return f"{text} (default: {format_value(self.default)})".replace("%", "%%")

    def kind(self) -> Kind:
        """What values the setting's annotation admits."""
        scalars: list[type] = []
        choices: list[Any] = []
        is_list = single = optional = mapping = False
        for arg in _flatten(self.field.annotation):
            if arg is type(None):
                optional = True
            elif typing.get_origin(arg) is Literal:
                choices += list(typing.get_args(arg))
                single = True
            elif typing.get_origin(arg) is list:
                is_list = True
                scalars += [a for a in _flatten(typing.get_args(arg)[0]) if a in _SCALARS]
            elif typing.get_origin(arg) is dict:
                mapping = True
            elif arg in _SCALARS:
                scalars.append(arg)
                single = True
        return Kind(
            scalar=scalars[0] if scalars else str,
            choices=tuple(choices),
            is_list=is_list,
            single=single,
            optional=optional,
            mapping=mapping,
        )


def _flatten(annotation: Any) -> list[Any]:
    """The members of a union (``X | None``; ``Annotated`` unwrapped), else ``[annotation]``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _flatten(a)]
    return [annotation]


def _nested_model(field: FieldInfo) -> type[BaseModel] | None:
    models = [
        a for a in _flatten(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)
    ]
    return models[0] if models else None


def settings_of(
    model: type[BaseModel],
    defaults: BaseModel | None = None,
    prefix: tuple[str, ...] = (),
    section: str = "",
) -> Iterator[Setting]:
    """Every leaf setting of ``model``, depth first, in the order the fields are declared.

    Args:
        model: The settings model, e.g. ``RunConfig``.
        defaults: An instance whose values are the defaults (a section's default
            instance, e.g. ``RunConfig.prior``'s box bounds); None: the fields' own.
        prefix: The path of ``model`` in the root model.
        section: The title of the section ``model`` is.
    """
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = field.get_default(call_default_factory=True)
        nested = _nested_model(field)
        if nested is not None:
            instance = default if isinstance(default, BaseModel) else None
            title = field.title or name
            within = f"{section} / {title}" if prefix else title
            yield from settings_of(nested, instance, path, within)
        else:
            yield Setting(path=path, field=field, default=default, section=section or "Run")


def format_value(value: Any) -> str:
    """A default as a user types it: ``none``, ``true``, ``1 2``, ``a=1``, ``0.0005``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return " ".join(format_value(v) for v in value) if value else "(empty)"
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items()) if value else "(empty)"
    return str(value)
