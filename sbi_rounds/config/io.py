"""Reading user-supplied vectors (``xobs``, references) from numbers and files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["load_array", "load_vector"]


def load_array(spec: str) -> np.ndarray:
    """Load an array from ``file.npy``, ``file.csv`` or ``file.h5:dataset``.

    Args:
        spec: The path, with ``:dataset`` appended for HDF5 files.

    Returns:
        The array as float64.
    """
    path, _, dataset = spec.partition(":") if ".h5:" in spec or ".hdf5:" in spec else (spec, "", "")
    p = Path(path)
    if not p.is_file():
        raise ValueError(
            f"{spec!r} is neither a list of numbers nor an existing file; give numbers "
            "(--xobs 0.5 -0.3) or a path to .npy, .csv or file.h5:dataset"
        )
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix in (".csv", ".txt"):
            with warnings.catch_warnings():  # an empty file: said below, in one line
                warnings.simplefilter("ignore", UserWarning)
                arr = np.loadtxt(p, delimiter="," if suffix == ".csv" else None, ndmin=1)
        elif suffix in (".h5", ".hdf5"):
            import h5py

            if not dataset:
                raise ValueError(f"name the dataset inside the HDF5 file: {path}:/path/to/dataset")
            with h5py.File(p, "r") as f:
                if dataset not in f:
                    raise ValueError(
                        f"{path} has no dataset {dataset!r}; it holds {sorted(f.keys())}"
                    )
                arr = f[dataset][()]
        else:
            raise ValueError(f"{spec!r}: unsupported file type {suffix!r}; use .npy, .csv or .h5")
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and str(e).startswith(("name the", str(path))):
            raise
        raise ValueError(f"could not read numbers from {spec!r}: {e}") from None
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ValueError(f"{spec!r} holds no numbers (an empty file?); write the values in it")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{spec!r} holds {arr.dtype} values, not numbers")
    return arr.astype(np.float64)


def load_vector(spec: str) -> np.ndarray:
    """Load a vector ``(K,)`` from a file (see :func:`load_array`); a ``(1, K)`` row is accepted."""
    arr = load_array(spec)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise ValueError(f"{spec!r} must hold one vector (K,) or one row (1, K); got {arr.shape}")
    return arr
