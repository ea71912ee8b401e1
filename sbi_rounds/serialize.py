"""Nested state (dicts, lists, tensors, numbers, strings, None) to HDF5 and back, no pickle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import torch

__all__ = ["read_nested", "write_nested"]

_TYPE = "__type__"


def write_nested(parent: h5py.Group, name: str, value: Any) -> None:
    """Write ``value`` under ``parent[name]``.

    Dicts become groups whose children are numbered, each with its original ``key``
    (str or int) as attributes; lists and tuples become numbered groups; tensors and arrays
    become datasets; numbers, bools, strings and None become scalar datasets. Anything
    else is a ``TypeError``: there is no fallback to pickle.
    """
    if isinstance(value, Mapping):
        g = parent.create_group(name)
        g.attrs[_TYPE] = "dict"
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"cannot store dict key {key!r} of type {type(key).__name__}")
            write_nested(g, str(i), item)
            g[str(i)].attrs["key"] = key
            g[str(i)].attrs["key_type"] = "int" if isinstance(key, int) else "str"
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
        ds.attrs[_TYPE] = "tensor"
        ds.attrs["dtype"] = dtype
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


def read_nested(node: h5py.Group | h5py.Dataset) -> Any:
    """Inverse of :func:`write_nested`."""
    kind = node.attrs[_TYPE]
    if kind == "dict":
        out: dict[Any, Any] = {}
        for i in range(len(node)):
            child = node[str(i)]
            key = child.attrs["key"]
            key = int(key) if child.attrs["key_type"] == "int" else str(key)
            out[key] = read_nested(child)
        return out
    if kind in ("list", "tuple"):
        items = [read_nested(node[str(i)]) for i in range(int(node.attrs["length"]))]
        return items if kind == "list" else tuple(items)
    if kind == "tensor":
        dtype = getattr(torch, str(node.attrs["dtype"]))
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
