"""A round's bulk files (format 2): created whole and crash-safely, linked, found, synced.

A bulk file is written under a temporary name, synced, and renamed into place before the run
file's commit that links it, so a link never points at a half-made file. A kill between the
rename and that commit leaves a file nothing links to: an orphan, removed (with temporaries)
by :func:`stale_files` at the next open under the lock, and overwritten if the round is
planned again first. After it is created, a bulk file is only written in place (its data
bytes): it is never copied and never gets new HDF5 metadata.

Where: in the folder the run file names in its attribute :data:`BULK_FOLDER_ATTR`
(``rounds/`` beside it, see ``layout``); a run file without it (made before the folder) keeps
its bulk files beside it. A link names its file by its path relative to the run file's
directory, so readers follow it wherever the file lies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

from sbi_rounds.store.format import allocate, fsync_path
from sbi_rounds.store.layout import BULK_FOLDER

__all__ = [
    "BULK_FOLDER_ATTR",
    "bulk_candidates",
    "bulk_folder",
    "create_bulk_file",
    "linked_file",
    "linked_files",
    "round_files",
    "stale_files",
    "sync_files",
]

#: The run file's attribute that names the folder of its bulk files, relative to it.
BULK_FOLDER_ATTR = "bulk_folder"


def bulk_folder(f: h5py.File) -> str:
    """The folder, relative to the run file ``f``'s directory, of the bulk files of rounds
    planned from now on (``""``: beside it, as in run files made before the folder)."""
    return str(f.attrs.get(BULK_FOLDER_ATTR, ""))


def bulk_candidates(run_file: Path) -> list[Path]:
    """The files named like bulk files of ``run_file`` (``<stem>.round-*``) beside it and in
    the folder :data:`~sbi_rounds.store.layout.BULK_FOLDER` beside it, linked or not."""
    pattern = f"{run_file.stem}.round-*"
    return sorted([*run_file.parent.glob(pattern), *(run_file.parent / BULK_FOLDER).glob(pattern)])


def create_bulk_file(
    path: Path,
    datasets: Mapping[str, tuple[tuple[int, ...], Any, Any]],
    *,
    durable: bool,
    values: Mapping[str, Any] | None = None,
) -> None:
    """Create ``path`` with ``datasets`` (``{name: (shape, dtype, fill)}``) allocated in full,
    ``values`` written into them; it appears complete or not at all (an older file of the
    name, which nothing links to, is replaced)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if not path.parent.is_dir():  # the run's first round file: its folder, made durable
        path.parent.mkdir(parents=True)
        if durable:
            fsync_path(path.parent.parent, directory=True)
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            for name, (shape, dtype, fill) in datasets.items():
                allocate(f, name, shape, dtype, fill)
                if values and name in values:
                    f[name][...] = values[name]
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def linked_file(group: h5py.Group, name: str) -> str | None:
    """The file ``group``'s member ``name`` links to (None: it is stored in the group's own
    file, or missing)."""
    link = group.get(name, getlink=True)
    return link.filename if isinstance(link, h5py.ExternalLink) else None


def round_files(group: h5py.Group) -> list[str]:
    """The bulk files a round group links to (empty for a format-1 round)."""
    return sorted({f for name in group for f in [linked_file(group, name)] if f is not None})


def linked_files(f: h5py.File) -> set[str]:
    """Every bulk file the run file links to.

    Raises:
        KeyError: A round's group cannot be opened (the run file is damaged).
    """
    if "rounds" not in f:
        return set()
    rounds = f["rounds"]
    return {name for key in rounds for name in round_files(rounds[key])}


def stale_files(run_file: Path, linked: set[str]) -> list[Path]:
    """Bulk files of ``run_file`` (see :func:`bulk_candidates`) that nothing links to, and
    temporaries of bulk files; ``linked`` names files by their paths relative to the run
    file's directory, as the links do."""
    top = run_file.parent
    return [p for p in bulk_candidates(run_file) if p.relative_to(top).as_posix() not in linked]


def sync_files(directory: Path, names: list[str]) -> None:
    """Make the in-place writes to the bulk files ``names`` in ``directory`` durable.

    ``fdatasync``: their size never changes after they are made, so their data is all there
    is to write (no journal commit for the modification time).
    """
    for name in names:
        try:
            fd = os.open(directory / name, os.O_RDONLY)
        except FileNotFoundError:
            continue  # a simulations file not made yet
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
