"""Checksums of the run file's datasets, and the check that names what is damaged.

Every dataset written in a structural commit (network weights, training history and
checkpoint, saved failures) gets a CRC-32 of its values in the attribute ``crc32``
(:func:`stamp`). The bulk datasets of a round, written in place chunk by chunk, get theirs
when they stop changing (:func:`seal`): parameters, simulations and validity when the round's
simulations are appended for training, posterior samples when the round is done. A dataset
without the attribute (a file from before checksums, a buffer still being filled) is only
checked for being readable. A round's bulk datasets (format 2: in files of their own, linked
from the run file) keep their checksums in the run file, as attributes of the round group
named ``crc32:<dataset>``, so that a bulk file never gets new metadata after it is made.
The run file's root attributes (the settings, their history, the code fingerprint) get one
CRC-32 together (:func:`stamp_settings`, in every commit), so an edit of them made outside
sbi-rounds is damage that :func:`verify_file` names.

:func:`verify_file` reads every group and dataset and returns what is damaged, named for a
person (``"round 2's network weights"``); at a session's start it leaves out the values of
bulk files unchanged since they were sealed (:func:`unchanged_since_sealed`), which are
checked when they are read (:func:`mismatch`); HDF5's own structural errors (damaged internals)
are caught the same way. A dataset that a repair (``repair``) allocated afresh carries the
checksum its values had (:data:`EXPECTED_ATTR`): the values computed again must have it when
they are stamped, or :class:`NotReproducedError` stops the commit. This is the one place
checksums are computed and checked, so a new file layout keeps it.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sbi_rounds.store.format import RunFileError

__all__ = [
    "CHECKSUM_ATTR",
    "EXPECTED_ATTR",
    "Damage",
    "DamagedRunError",
    "NotReproducedError",
    "SETTINGS_ATTR",
    "SETTINGS_PATH",
    "STATE_ATTR",
    "checksum",
    "describe",
    "expect_checksum",
    "mismatch",
    "not_made_yet",
    "seal",
    "stamp",
    "stamp_settings",
    "stamp_tree",
    "stored_checksum",
    "unchanged_since_sealed",
    "unopenable",
    "verify_file",
]

#: The attribute that holds a dataset's CRC-32 (of its values in C order, as stored).
CHECKSUM_ATTR = "crc32"

#: The attribute of a round group (``bulk_state:<file>``) that holds a bulk file's size and
#: modification time when its datasets were sealed (``unchanged_since_sealed``).
STATE_ATTR = "bulk_state"

#: The attribute of a dataset a repair allocated afresh (``sbi_rounds.store.repair``): the
#: checksum its values had, which the values computed again must have when it is stamped.
EXPECTED_ATTR = "crc32_before_repair"

#: The run file's root attribute that holds a CRC-32 of all its other root attributes (the
#: settings, their fingerprint and history, the code fingerprint; :func:`stamp_settings`).
SETTINGS_ATTR = "crc32_settings"

#: The path :func:`verify_file` names damaged (or edited) settings by.
SETTINGS_PATH = "/@settings"

#: Parts of a round group, as a person names them (first match wins).
_PARTS = (
    ("network", "network weights"),
    ("history", "training history"),
    ("training_checkpoint", "training checkpoint"),
    ("failures", "saved failed chunks"),
    ("theta", "parameters"),
    ("theta_done", "parameter mark"),
    ("x", "simulations"),
    ("valid", "validity marks"),
    ("chunk_done", "chunk marks"),
    ("chunk_seconds", "chunk seconds"),
    ("posterior_samples", "posterior samples"),
    ("samples_done", "posterior sample mark"),
)


@dataclass(frozen=True)
class Damage:
    """A damaged object of the run file: its HDF5 path and what is wrong with it."""

    path: str
    problem: str

    @property
    def round(self) -> int | None:
        """The round it belongs to (None: run-level data)."""
        m = re.match(r"/?rounds/(\d+)", self.path)
        return int(m.group(1)) if m else None

    def __str__(self) -> str:
        return f"{describe(self.path)} {'are' if _plural(self.path) else 'is'} damaged " + (
            f"({self.path}: {self.problem})"
        )


class DamagedRunError(RunFileError):
    """Part of the run file is damaged; the message names what, and what is still intact."""


class NotReproducedError(RunFileError):
    """Values computed again after a repair differ from those the run had."""


def checksum(values: np.ndarray) -> int:
    """CRC-32 of an array's values (C order, its stored dtype), read in place (no copy)."""
    values = np.ascontiguousarray(values)
    return zlib.crc32(values.reshape(-1).view(np.uint8)) if values.size else zlib.crc32(b"")


def stamp(ds: h5py.Dataset) -> None:
    """Store the checksum of ``ds``'s current values in its ``crc32`` attribute.

    Raises:
        NotReproducedError: ``ds`` was allocated afresh by a repair and its new values do
            not have the checksum the old ones had (:data:`EXPECTED_ATTR`).
    """
    value = checksum(ds[()])
    expected = ds.attrs.get(EXPECTED_ATTR)
    if expected is not None:
        if value != int(expected):
            raise NotReproducedError(_not_reproduced(ds.name))
        del ds.attrs[EXPECTED_ATTR]
    ds.attrs[CHECKSUM_ATTR] = np.uint32(value)


def seal(group: h5py.Group, names: Iterable[str]) -> None:
    """Stamp the datasets ``names`` of ``group`` (call inside a structural commit, once they
    no longer change); a dataset in a bulk file gets its checksum on ``group``, and the state
    of its file then (see :func:`unchanged_since_sealed`).

    Raises:
        NotReproducedError: As :func:`stamp`.
    """
    sealed: set[Path] = set()
    for name in names:
        if not _linked(group, name):
            stamp(group[name])
            continue
        path = _bulk_path(group, name)
        try:  # read-only, on its own: opened through the run file it would be opened to write
            with h5py.File(path, "r", locking=False) as bulk:
                value = checksum(bulk[group.get(name, getlink=True).path][()])
            sealed.add(path)
        except OSError:  # open elsewhere in this process to write: read through the link
            value = checksum(group[name][()])
        expected = group.attrs.get(f"{EXPECTED_ATTR}:{name}")
        if expected is not None:
            if value != int(expected):
                raise NotReproducedError(_not_reproduced(f"{group.name}/{name}"))
            del group.attrs[f"{EXPECTED_ATTR}:{name}"]
        group.attrs[f"{CHECKSUM_ATTR}:{name}"] = np.uint32(value)
    for path in sealed:
        group.attrs[f"{STATE_ATTR}:{path.name}"] = _state(path)


def unchanged_since_sealed(group: h5py.Group, name: str) -> bool:
    """Whether the bulk file of ``group``'s dataset ``name`` is as it was when its datasets
    were last sealed (same size and modification time): then its values were checked then,
    and the start-up check (:func:`verify_file` with ``deep=False``) does not read them."""
    path = _bulk_path(group, name)
    recorded = group.attrs.get(f"{STATE_ATTR}:{path.name}")
    try:
        return recorded is not None and str(recorded) == _state(path)
    except OSError:
        return False


def _bulk_path(group: h5py.Group, name: str) -> Path:
    return Path(group.file.filename).parent / group.get(name, getlink=True).filename


def _state(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def _linked(group: h5py.Group, name: str) -> bool:
    """Whether ``group``'s member ``name`` is stored in a bulk file (an external link)."""
    return isinstance(group.get(name, getlink=True), h5py.ExternalLink)


def stored_checksum(group: h5py.Group, name: str) -> int | None:
    """The checksum stored for ``group``'s dataset ``name`` (None: none)."""
    if _linked(group, name):
        value = group.attrs.get(f"{CHECKSUM_ATTR}:{name}")
    else:
        value = group[name].attrs.get(CHECKSUM_ATTR)
    return None if value is None else int(value)


def expect_checksum(group: h5py.Group, name: str, value: int, linked: bool) -> None:
    """Record that ``group``'s dataset ``name``, allocated afresh by a repair, must get the
    checksum ``value`` when it is sealed (on the group when it is or will be in a bulk file).
    """
    if linked:
        group.attrs[f"{EXPECTED_ATTR}:{name}"] = np.uint32(value)
    else:
        group[name].attrs[EXPECTED_ATTR] = np.uint32(value)


def _not_reproduced(path: str) -> str:
    return (
        f"{describe(path)}, computed again after a repair of the run file, differ "
        "from the ones the run had (their checksum): the simulator (or the "
        "proposal) does not give the same values for the same seed, and the round's "
        "network and later rounds were built on the old ones. The new values are not "
        "used. Start a new run (another --run-id), or restore the file from a backup."
    )


def _settings_checksum(f: h5py.File) -> int:
    """CRC-32 of the run file's root attributes but :data:`SETTINGS_ATTR`: names, dtypes
    and values, in name order."""
    value = 0
    for key in sorted(f.attrs):
        if key == SETTINGS_ATTR:
            continue
        data = np.asarray(f.attrs[key])
        for part in (key.encode(), data.dtype.str.encode(), data.tobytes()):
            value = zlib.crc32(part + b"\0", value)
    return value


def stamp_settings(f: h5py.File) -> None:
    """Store the checksum of the run file's root attributes (call in every commit that may
    change them: creating the file, a structural commit, a repair)."""
    f.attrs[SETTINGS_ATTR] = np.uint32(_settings_checksum(f))


def _check_settings(f: h5py.File) -> Damage | None:
    """Damage of the run file's root attributes: unreadable, or edited since they were
    stamped (None: intact, or a file from before they were stamped)."""
    try:
        expected = f.attrs.get(SETTINGS_ATTR)
        if expected is None or _settings_checksum(f) == int(expected):
            return None
    except Exception as e:  # noqa: BLE001 - any error of HDF5's internals is damage
        return Damage(SETTINGS_PATH, f"cannot be read: {e}")
    return Damage(
        SETTINGS_PATH,
        "they do not match their checksum: changed outside sbi-rounds (an edit of run.h5) "
        "or by a damaged disk",
    )


def stamp_tree(group: h5py.Group) -> None:
    """Stamp every dataset below ``group`` (call inside the structural commit that wrote it)."""
    group.visititems(lambda _, obj: stamp(obj) if isinstance(obj, h5py.Dataset) else None)


def describe(path: str) -> str:
    """A person's name for an object of the run file: ``"round 2's network weights"``."""
    if path == SETTINGS_PATH:
        return "the run's stored settings"
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "rounds" and parts[1].isdigit():
        where = f"round {int(parts[1])}'s"
        rest = parts[2] if len(parts) > 2 else ""
        for key, name in _PARTS:
            if rest == key:
                return f"{where} {name}"
        return f"{where} {rest or 'data'}" if rest else f"round {int(parts[1])}"
    return f"the run's {path.strip('/') or 'root group'}"


def _plural(path: str) -> bool:
    name = describe(path)
    plural = ("weights", "parameters", "simulations", "marks", "samples", "chunks", "seconds")
    return name.endswith((*plural, "settings"))


def verify_file(f: h5py.File, under: str = "/", *, deep: bool = True) -> list[Damage]:
    """Read every group and dataset of an open run file (below the group ``under``, or the
    one dataset ``under``; :data:`SETTINGS_PATH`: the stored settings only); what is
    damaged, in file order. The stored settings (the root's attributes) are checked when
    ``under`` is the root.

    A group that cannot be listed is one damage (what is below it cannot be reached); a
    dataset that cannot be read, or whose values do not match its checksum, is another.
    ``deep=False`` (the start-up check) reads every dataset of the run file itself, but of a
    round's bulk files only what changed since it was sealed: a bulk dataset without a
    checksum (still being filled), or in a file unchanged since its datasets were sealed
    (:func:`unchanged_since_sealed`), is only opened. Its values are checked when they are
    read (``RunStore.read_simulations`` and the like), and ``deep=True`` reads them all.
    """
    settings = _check_settings(f) if under.strip("/") in ("", SETTINGS_PATH[1:]) else None
    damage: list[Damage] = [] if settings is None else [settings]
    if under == SETTINGS_PATH:
        return damage
    try:
        group = f[under]
    except Exception as e:  # noqa: BLE001 - any error of HDF5's internals is damage
        parent, _, name = under.rstrip("/").rpartition("/")
        try:
            if not_made_yet(f[parent or "/"], name):
                return damage
            problem = unopenable(f[parent or "/"], name, e)
        except Exception:  # noqa: BLE001 - the parent cannot be opened either
            problem = f"cannot be opened: {e}"
        return [*damage, Damage(under, problem)]
    if isinstance(group, h5py.Dataset):  # one dataset
        parent, _, name = under.rstrip("/").rpartition("/")
        problem = _check_dataset(group, f[parent or "/"], name, deep)
        return [*damage, *([] if problem is None else [Damage(under, problem)])]
    _walk(group, under, damage, deep)
    return damage


def _walk(group: h5py.Group, path: str, damage: list[Damage], deep: bool) -> None:
    try:
        names = list(group.keys())
    except Exception as e:  # noqa: BLE001 - any error of HDF5's internals is damage
        damage.append(Damage(path, f"cannot be listed: {e}"))
        return
    for name in names:
        child_path = f"{path.rstrip('/')}/{name}"
        try:
            child = group[name]
        except Exception as e:  # noqa: BLE001
            if not not_made_yet(group, name):
                damage.append(Damage(child_path, unopenable(group, name, e)))
            continue
        if isinstance(child, h5py.Group):
            _walk(child, child_path, damage, deep)
            continue
        problem = _check_dataset(child, group, name, deep)
        if problem is not None:
            damage.append(Damage(child_path, problem))


def unopenable(group: h5py.Group, name: str, error: BaseException) -> str:
    """What is wrong with ``group``'s member ``name`` that raised ``error`` when opened,
    naming the round file that holds it (missing, or unreadable: truncated, say)."""
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        if not (Path(group.file.filename).parent / link.filename).exists():
            return f"its file {link.filename} is missing"
        return f"its file {link.filename} cannot be read: {error}"
    return f"cannot be opened: {error}"


def not_made_yet(group: h5py.Group, name: str) -> bool:
    """Whether ``group``'s ``name`` is a round's simulations file that is not created yet
    (format 2 creates it with the first chunk: the link leads nowhere, no chunk is done)."""
    link = group.get(name, getlink=True)
    if name != "x" or not isinstance(link, h5py.ExternalLink):
        return False
    if (Path(group.file.filename).parent / link.filename).exists():
        return False  # there, but it cannot be opened: damaged
    try:
        return not group["chunk_done"][()].any()
    except Exception:  # noqa: BLE001 - unreadable chunk marks are damage of their own
        return False


def _check_dataset(ds: h5py.Dataset, group: h5py.Group, name: str, deep: bool) -> str | None:
    try:
        expected = stored_checksum(group, name)
        if not deep and _linked(group, name):
            if expected is None or unchanged_since_sealed(group, name):
                _ = ds.shape, ds.dtype  # opened, its header read: checked when read
                return None
        values = ds[()]
    except Exception as e:  # noqa: BLE001 - unreadable data or attributes
        return f"cannot be read: {e}"
    return mismatch(values, expected)


def mismatch(values: np.ndarray, expected: int | None) -> str | None:
    """What is wrong with ``values`` whose stored checksum is ``expected`` (None: no
    checksum), or None."""
    if expected is not None and checksum(values) != int(expected):
        return "its values do not match their checksum"
    return None
