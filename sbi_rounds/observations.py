"""A campaign's table of observations: the numbers, their column names and observation ids.

A ``.csv`` may start with a header row of column names (any field of the first row that is
not a number makes it a header); the names become the observations' x names, and a column
named by ``campaign.id_column`` holds each observation's id (its directory) instead of
``obs-000i``. ``.npy`` and ``file.h5:dataset`` tables hold numbers only.

Example:
    A file ``obs.csv``::

        galaxy,flux,colour
        ngc-1,0.5,-0.3
        ngc-2,0.1,0.2

    read with ``read_observations("obs.csv", id_column="galaxy")`` gives values ``(2, 2)``,
    names ``["flux", "colour"]`` and ids ``["ngc-1", "ngc-2"]``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbi_rounds.config.io import load_array

__all__ = ["ObservationTable", "observation_id", "read_observations"]

#: What an observation id may be: a directory name (the same rule as ``run_id``).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def observation_id(index: int) -> str:
    """The run id of observation ``index`` (from 0) of a table without ids: ``obs-0003``."""
    return f"obs-{index:04d}"


@dataclass(frozen=True)
class ObservationTable:
    """The observations of a campaign.

    Attributes:
        values: One observation per row, with shape ``(N, K)``, finite.
        names: The K column names from a header row, or None (no header).
        ids: The N observation ids (run directories): the id column's, or ``obs-000i``.
    """

    values: np.ndarray
    names: list[str] | None
    ids: list[str]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return [
            [field.strip() for field in row]
            for row in csv.reader(f)
            if row and not row[0].lstrip().startswith("#")
        ]


def _from_header_csv(
    spec: str, rows: list[list[str]], id_column: str | None
) -> tuple[np.ndarray, list[str], list[str] | None]:
    """The numbers ``(N, K)``, the K names and the ids (None: no id column) of a table
    whose first row is its header."""
    header, body = rows[0], rows[1:]
    if len(set(header)) != len(header) or "" in header:
        raise ValueError(f"{spec!r}: the header row's column names must be unique and non-empty")
    if id_column is not None and id_column not in header:
        raise ValueError(
            f"{spec!r} has no column {id_column!r} (campaign.id_column); its columns are "
            f"{', '.join(header)}"
        )
    keep = [i for i, name in enumerate(header) if name != id_column]
    values = np.empty((len(body), len(keep)))
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{spec!r} line {r}: {len(row)} fields, the header has {len(header)}")
        for c, i in enumerate(keep):
            if not _is_number(row[i]):
                hint = "" if id_column else "; a column of ids? name it with campaign.id_column"
                raise ValueError(
                    f"{spec!r} line {r}, column {header[i]!r}: {row[i]!r} is not a number{hint}"
                )
            values[r - 2, c] = float(row[i])
    ids = None if id_column is None else [row[header.index(id_column)] for row in body]
    return values, [header[i] for i in keep], ids


def _check_ids(spec: str, ids: list[str]) -> list[str]:
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise ValueError(
            f"{spec!r}: observation ids {bad[:5]} cannot name directories; use letters, "
            "digits, '.', '_' and '-', starting with a letter or digit"
        )
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{spec!r}: observation ids {repeated[:5]} appear more than once")
    return ids


def read_observations(spec: str, id_column: str | None = None) -> ObservationTable:
    """The observations of ``.csv`` (with or without a header row), ``.npy`` or
    ``file.h5:dataset``.

    A one-dimensional table holds N observations of one number each.

    Args:
        spec: The file, with ``:dataset`` for HDF5.
        id_column: The header's column of observation ids, or None.

    Raises:
        ValueError: An unreadable file, an empty table, a non-number (named by line and
            column), non-finite values (named by row), an id column that is not there or
            ids that cannot name directories.
    """
    path = Path(spec)
    rows = _read_csv_rows(path) if path.suffix.lower() == ".csv" and path.is_file() else []
    names = ids = None
    if rows and not all(_is_number(field) for field in rows[0]):
        table, names, ids = _from_header_csv(spec, rows, id_column)
    else:
        if id_column is not None:
            raise ValueError(
                f"campaign.id_column={id_column!r} needs a .csv table with a header row of "
                f"column names; {spec!r} has none"
            )
        table = load_array(spec)
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError(
            f"{spec!r} must hold a table (N, K), one observation per row; got shape {table.shape}"
        )
    bad = sorted({int(i) for i in np.argwhere(~np.isfinite(table))[:, 0]})
    if bad:
        raise ValueError(f"{spec!r}: rows {bad[:10]} hold NaN or infinite values")
    ids = [observation_id(i) for i in range(len(table))] if ids is None else ids
    return ObservationTable(table, names, _check_ids(spec, ids))
