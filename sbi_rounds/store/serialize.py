"""Nested state (dicts, lists, tensors, numbers, strings, None) to HDF5 and back, no pickle."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import torch

__all__ = ["read_key", "read_nested", "write_nested"]

_TYPE = "__type__"


def write_nested(parent: h5py.Group, name: str, value: Any) -> None:
    """Write ``value`` under ``parent[name]``.

    Dicts become groups whose children are numbered, their keys (str or int) listed in the
    group's ``keys`` attribute; lists and tuples become numbered groups, or one dataset when
    they hold only ints or only floats; tensors and arrays become datasets; numbers, bools,
    strings and None become scalar datasets. Anything
    else is a ``TypeError``: there is no fallback to pickle.
    """
    if isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"cannot store dict key {key!r} of type {type(key).__name__}")
        g = parent.create_group(name)
        g.attrs[_TYPE] = "dict"
        # The keys, typed, in one attribute: one per child made every commit slower.
        g.attrs["keys"] = json.dumps([[k, "int" if isinstance(k, int) else "str"] for k in keys])
        for i, item in enumerate(value.values()):
            write_nested(g, str(i), item)
    elif isinstance(value, (list, tuple)) and _packable(value):
        # A list of plain numbers (a loss history) is one dataset, not one per element:
        # hundreds of tiny datasets make every commit and every open of the file slower.
        kind = "float" if isinstance(value[0], (float, np.floating)) else "int"
        data = np.asarray(value, dtype=np.float64 if kind == "float" else np.int64)
        ds = parent.create_dataset(name, data=data)
        ds.attrs[_TYPE] = f"{'list' if isinstance(value, list) else 'tuple'}_of_{kind}"
    elif isinstance(value, (list, tuple)):
        g = parent.create_group(name)
        g.attrs[_TYPE] = "list" if isinstance(value, list) else "tuple"
        g.attrs["length"] = len(value)
        for i, item in enumerate(value):
            write_nested(g, str(i), item)
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        dtype = str(t.dtype).removeprefix("torch.")
        if t.dtype == torch.bfloat16:
            t = t.float()
        ds = parent.create_dataset(name, data=t.numpy())
        ds.attrs[_TYPE] = f"tensor:{dtype}"
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("cannot store object arrays")
        ds = parent.create_dataset(name, data=value)
        ds.attrs[_TYPE] = "ndarray"
    elif value is None:
        ds = parent.create_dataset(name, data=np.uint8(0))
        ds.attrs[_TYPE] = "none"
    elif isinstance(value, bool):
        ds = parent.create_dataset(name, data=np.bool_(value))
        ds.attrs[_TYPE] = "bool"
    elif isinstance(value, (int, np.integer)):
        ds = parent.create_dataset(name, data=np.int64(value))
        ds.attrs[_TYPE] = "int"
    elif isinstance(value, (float, np.floating)):
        ds = parent.create_dataset(name, data=np.float64(value))
        ds.attrs[_TYPE] = "float"
    elif isinstance(value, str):
        ds = parent.create_dataset(name, data=value, dtype=h5py.string_dtype())
        ds.attrs[_TYPE] = "str"
    else:
        raise TypeError(
            f"cannot store a {type(value).__name__} in a run file; give its state as "
            "tensors, numbers, strings, lists and dicts"
        )


def _packable(value: list[Any] | tuple[Any, ...]) -> bool:
    """A non-empty list of only ints (int64 range), or of only floats: no bools, no mixes."""
    if not value:
        return False
    if all(isinstance(v, (float, np.floating)) for v in value):
        return True
    return all(
        isinstance(v, (int, np.integer))
        and not isinstance(v, (bool, np.bool_))
        and -(2**63) <= int(v) < 2**63
        for v in value
    )


def read_key(group: h5py.Group, key: str | int) -> Any:
    """One entry of a dict stored by :func:`write_nested`, without reading the others.

    Reads a number from a training checkpoint without loading its weights, for example.

    Raises:
        TypeError: ``group`` is not a stored dict.
        KeyError: the dict has no ``key``.
    """
    if group.attrs.get(_TYPE) != "dict":
        raise TypeError(f"{group.name} is not a dict written by write_nested")
    for i, stored in enumerate(_dict_keys(group)):
        if stored == key:
            return read_nested(group[str(i)])
    raise KeyError(f"{group.name} has no key {key!r}")


def _dict_keys(group: h5py.Group) -> list[str | int]:
    """The keys of a stored dict, typed, in the order of its numbered children."""
    return [int(k) if t == "int" else str(k) for k, t in json.loads(group.attrs["keys"])]


def read_nested(node: h5py.Group | h5py.Dataset) -> Any:
    """Inverse of :func:`write_nested`."""
    kind = node.attrs[_TYPE]
    if kind == "dict":
        return {key: read_nested(node[str(i)]) for i, key in enumerate(_dict_keys(node))}
    if kind in ("list", "tuple"):
        items = [read_nested(node[str(i)]) for i in range(int(node.attrs["length"]))]
        return items if kind == "list" else tuple(items)
    if kind in ("list_of_float", "tuple_of_float", "list_of_int", "tuple_of_int"):
        cast = float if kind.endswith("float") else int
        items = [cast(v) for v in node[()]]
        return items if kind.startswith("list") else tuple(items)
    if kind.startswith("tensor:"):
        dtype = getattr(torch, kind.removeprefix("tensor:"))
        return torch.from_numpy(np.array(node[()])).to(dtype)
    if kind == "ndarray":
        return np.array(node[()])
    if kind == "none":
        return None
    if kind == "bool":
        return bool(node[()])
    if kind == "int":
        return int(node[()])
    if kind == "float":
        return float(node[()])
    if kind == "str":
        raw = node[()]
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    raise ValueError(f"unknown stored type {kind!r} at {node.name}")
