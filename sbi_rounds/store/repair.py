"""Repairing a damaged run file: a new file without the damaged parts, which the run recomputes.

A damaged part of round R (see ``checksums``) is left out of a new copy of the file, and the
round's stage mark goes back to before the stage that made it, so rerunning the run's command
recomputes it (every stage skips what the file shows committed):

=============================================  ==========  =================================
damaged                                        back to     recomputed by the next run
=============================================  ==========  =================================
network weights, training history, checkpoint  APPENDED    training, posterior samples,
                                                           summary, pairplot and checks
posterior samples or their mark                TRAINED     posterior samples, summary,
                                                           pairplot and checks
parameters or their mark (the round's data     PLANNED     parameters (drawn again with the
file missing or truncated: all of these)                   same seeds), simulations, samples
simulations, validity or chunk marks (the      SAMPLED     every chunk's simulations (a
simulations file missing or truncated)                     checksum covers the whole dataset)
simulation counts                              SIMULATED   the counts
saved failed chunks, chunk and stage seconds   (stays)     nothing: dropped or reset
=============================================  ==========  =================================

Anything else (the run's own data and settings, a round's group or its stage) cannot be
repaired; nor can simulations whose simulator changed or is gone (``simulator_problem``).
Parameters and simulations drawn again must reproduce the checksums the damaged datasets
carried (kept in :data:`~sbi_rounds.store.checksums.EXPECTED_ATTR` and
checked when they are sealed): the round's network and the later rounds were built on the
old values, so a simulator that does not give the same values for the same seed stops there.

Later rounds are not touched. They depend on round R only through what they stored
themselves: their parameters (drawn from round R's posterior), their networks (trained from
round R's weights, on every round's simulations) and their checks. Training and sampling are
seeded from the run's seed, so round R recomputed on the same versions is bit for bit the
round they were built from.

The new file is written next to the run file and replaces it atomically (``os.replace``), so
an interrupted repair leaves the damaged file as it was. A format-2 round whose bulk data is
damaged gets a new data file (the next generation of its name, made before the run file
links it) with the intact arrays copied and the damaged ones allocated afresh; damaged
simulations are left unallocated, as before their first chunk. The old bulk files are
removed at the next open, once nothing links to them. The repair is recorded in the run's
history (``RunStore.config_history``).
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np

from sbi_rounds.store.bulk import create_bulk_file, linked_file
from sbi_rounds.store.checksums import (
    CHECKSUM_ATTR,
    DamagedRunError,
    describe,
    expect_checksum,
    stamp_settings,
    stored_checksum,
    verify_file,
)
from sbi_rounds.store.damage import RepairPlan, RoundRepair, damage_message, plan_repair
from sbi_rounds.store.files import StoreFile
from sbi_rounds.store.format import (
    TIMED_STAGES,
    Stage,
    allocate,
    data_file_name,
    data_layout,
    x_file_name,
)

__all__ = ["RepairRecords"]

#: Datasets allocated afresh when left out: (dtype, fill value); shapes from the round.
_FRESH = {
    "theta": (np.float32, np.nan),
    "theta_done": (np.int64, 0),
    "x": (np.float64, np.nan),
    "valid": (np.uint8, 0),
    "chunk_done": (np.uint8, 0),
    "chunk_seconds": (np.float64, np.nan),
    "posterior_samples": (np.float32, np.nan),
    "samples_done": (np.int64, 0),
    "timings": (np.float64, np.nan),
    "counts": (np.int64, -1),
}

#: Sealed datasets drawn or simulated again: the new values must match the old checksum.
_REPRODUCED = ("theta", "x", "valid", "chunk_done")


class RepairRecords(StoreFile):
    """Writes a damaged run file again without its damaged parts (see the module's notes)."""

    def repair(self, *, simulator_problem: Callable[[], str | None] | None = None) -> list[str]:
        """Replace the run file by a copy without its damaged parts, with the stage marks of
        their rounds set back so the next run recomputes them; call while holding the lock.

        Args:
            simulator_problem: Called when the repair needs simulations simulated again:
                why the run's simulator cannot reproduce them (changed, or no longer
                installed; ``sbi_rounds.lifecycle.fingerprint.simulator_unavailable``), or None.

        Returns:
            One line per repaired round (empty: the file is intact, and left untouched).

        Raises:
            DamagedRunError: Part of the damage cannot be repaired, or simulations would
                have to be simulated again by a simulator that cannot reproduce them;
                nothing was changed.
            OSError: The new file could not be written (a full disk); nothing was changed.
        """
        damage = self.verify()
        if not damage:
            return []
        plan = plan_repair(damage)
        if plan.unrepairable:
            raise DamagedRunError(damage_message(self.path, damage))
        resimulated = [r for r, fix in plan.rounds.items() if "simulations" in fix.recompute]
        reason = simulator_problem() if resimulated and simulator_problem else None
        if reason is not None:
            which = ", ".join(str(r) for r in resimulated)
            run = self.path.parent
            raise DamagedRunError(
                damage_message(self.path, damage).split("\n", 1)[0]
                + "\n"
                + "\n".join(f"  {d}" for d in damage)
                + f"\nRepairing it needs round(s) {which}'s simulations simulated again, but "
                f"{reason}: they could not be reproduced. Nothing was changed. Restore the "
                "file from a backup, or start a new run (another --run-id); sbi-rounds "
                f"export {run} still writes the intact rounds."
            )
        tmp = self._tmp_path()
        try:
            with self._read() as src, h5py.File(tmp, "w", locking=False) as dst:
                lines = _rebuild(src, dst, plan, self)
                left = verify_file(dst)
                if left:  # a bug of this module, never a reason to replace the file
                    raise RuntimeError(f"the repaired copy of {self.path} is damaged: {left}")
            self._publish(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return lines


def _rebuild(src: h5py.File, dst: h5py.File, plan: RepairPlan, store: StoreFile) -> list[str]:
    """Copy ``src`` into the empty file ``dst`` as ``plan`` says; the history lines."""
    _copy_attrs(src, dst, set())
    for name in src:
        if name != "rounds":
            src.copy(name, dst)
    rounds = dst.create_group("rounds")
    _copy_attrs(src["rounds"], rounds, set())
    lines = []
    for key in src["rounds"]:
        fix = plan.rounds.get(int(key))
        if fix is None:
            src["rounds"].copy(key, rounds)
        else:
            lines.append(_rebuild_round(src["rounds"][key], rounds.create_group(key), fix, store))
    history = json.loads(dst.attrs["config_history"])
    history.append({"time": time.time(), "changes": [f"repair: {line}" for line in lines]})
    dst.attrs["config_history"] = json.dumps(history)
    stamp_settings(dst)
    return lines


def _rebuild_round(src: h5py.Group, dst: h5py.Group, fix: RoundRepair, store: StoreFile) -> str:
    """Copy a round's group without what ``fix`` leaves out; allocate that afresh."""
    children, attrs = fix.left_out
    links = {name: linked_file(src, name) for name in src}  # None: in the run file itself
    _copy_attrs(src, dst, attrs | {f"{CHECKSUM_ATTR}:{name}" for name in children})
    for name in src:
        if name not in children and links[name] is None:
            src.copy(name, dst)
    if any(links.values()):
        _relink(src, dst, children, links, store)
    stage = Stage(int(src["stage"][0]))
    for name, (dtype, fill) in _FRESH.items():
        if name not in children:
            continue
        linked = links.get(name) is not None
        if not linked:
            allocate(dst, name, _shape(src, name), dtype, fill)
        if name in _REPRODUCED:
            expected = _old_checksum(src, name)
            if expected is not None:
                expect_checksum(dst, name, expected, linked)
            elif stage >= Stage.APPENDED:  # sealed once, but its checksum is unreadable
                raise DamagedRunError(
                    f"{store.path}: {describe(src.name + '/' + name)} cannot be simulated "
                    "again: the checksum the new values must reproduce cannot be read (the "
                    "round was trained on the old ones). Nothing was changed. Restore the "
                    "file from a backup, or start a new run (another --run-id)."
                )
    if "posterior_samples" in children and links.get("samples_done") is None:
        dst["samples_done"][0] = 0
    if "theta" in children and links.get("theta_done") is None:
        dst["theta_done"][0] = 0
    back_to = fix.back_to
    if back_to is not None and stage > back_to:
        dst["stage"][0] = int(back_to)
    after = Stage(int(dst["stage"][0]))
    moved = f"stage {stage.name} -> {after.name}" if after != stage else f"stage {stage.name}"
    return f"round {fix.round}: {fix.summary()}; {moved}"


def _relink(
    src: h5py.Group,
    dst: h5py.Group,
    children: set[str],
    links: dict[str, str | None],
    store: StoreFile,
) -> None:
    """Link a format-2 round's bulk data from ``dst``: its files as they are, or, where
    parts of its data file are left out, a new data file with the rest copied into it.
    Simulations left out are linked to a file of the next generation, created with the
    first chunk again."""
    round_ = int(src.name.rsplit("/", 1)[1])
    if links.get("x") is not None:
        x_file = links["x"]
        if "x" in children:
            folder = posixpath.dirname(x_file)  # the next generation beside the old one
            x_file = _next_name(
                store, [x_file], lambda g: x_file_name(store.path, round_, g, folder)
            )
        dst["x"] = h5py.ExternalLink(x_file, "/x")
    data = {name for name, file in links.items() if file is not None and name != "x"}
    if not data & children:
        for name in data:
            dst[name] = h5py.ExternalLink(links[name], f"/{name}")
        return
    n, chunks = int(src.attrs["num_simulations"]), int(src.attrs["num_chunks"])
    layout = data_layout(n, _shape(src, "theta")[1], chunks, _shape(src, "posterior_samples")[0])
    values = {name: src[name][()] for name in layout if name not in children}
    if "theta" in children:
        values["theta_done"] = 0
    if "posterior_samples" in children:
        values["samples_done"] = 0
    folder = posixpath.dirname(str(links[min(data)]))  # the next generation beside the old
    name = _next_name(
        store, links.values(), lambda g: data_file_name(store.path, round_, g, folder)
    )
    create_bulk_file(Path(store.path.parent / name), layout, durable=store.durable, values=values)
    for member in layout:
        dst[member] = h5py.ExternalLink(name, f"/{member}")


def _next_name(store: StoreFile, in_use: Iterable[str | None], name: Callable[[int], str]) -> str:
    """``name(g)`` for the first generation ``g`` >= 1 neither linked nor on disk."""
    used = set(in_use)
    generation = 1
    while name(generation) in used or (store.path.parent / name(generation)).exists():
        generation += 1
    return name(generation)


def _shape(src: h5py.Group, name: str) -> tuple[int, ...]:
    """The shape of the round's dataset ``name`` (from its header, else from the round's
    layout and the run's settings)."""
    try:
        return tuple(src[name].shape)
    except Exception:  # noqa: BLE001 - a damaged header: the shape from elsewhere
        pass
    n, chunks = int(src.attrs["num_simulations"]), int(src.attrs["num_chunks"])
    config = json.loads(src.file.attrs["config"])
    fixed = {
        "valid": (n,),
        "chunk_done": (chunks,),
        "chunk_seconds": (chunks,),
        "timings": (len(TIMED_STAGES),),
        "counts": (3,),
        "theta_done": (1,),
        "samples_done": (1,),
        "x": (n, int(src.attrs.get("x_dim", len(config["xobs"])))),
    }
    if name in fixed:
        return fixed[name]
    width = _theta_width(src, config)
    if name == "theta":
        return (n, width)
    samples = (config.get("posterior") or {}).get("num_samples")
    rounds = src.parent
    for key in [] if samples is not None else rounds:  # else another round's number
        if _readable(rounds[key], "posterior_samples"):
            samples = rounds[key]["posterior_samples"].shape[0]
            break
    if samples is None:
        raise DamagedRunError(
            f"the number of posterior samples of round {src.name} cannot be read. Restore "
            "the file from a backup, or start a new run (another --run-id)."
        )
    return (int(samples), width)


def _theta_width(src: h5py.Group, config: dict) -> int:
    """The number of parameters: from the round's parameters or posterior samples, else
    another round's, else the box prior's bounds (a round file that cannot be read)."""
    rounds = src.parent
    for group in (src, *(rounds[k] for k in rounds if rounds[k].name != src.name)):
        for name in ("theta", "posterior_samples"):
            if _readable(group, name):
                return int(group[name].shape[1])
    low = (config.get("prior") or {}).get("low")
    if low is not None:
        return len(low)
    raise DamagedRunError(
        f"the number of parameters of round {src.name} cannot be read: its parameters "
        "and posterior samples are damaged, and no other round or box prior gives it. "
        "Restore the file from a backup, or start a new run (another --run-id)."
    )


def _readable(group: h5py.Group, name: str) -> bool:
    try:
        group[name].shape  # noqa: B018 - opening the header is the check
    except Exception:  # noqa: BLE001
        return False
    return True


def _old_checksum(src: h5py.Group, name: str) -> int | None:
    try:
        return stored_checksum(src, name)
    except Exception:  # noqa: BLE001 - a damaged header: no checksum to reproduce
        return None


def _copy_attrs(src: h5py.HLObject, dst: h5py.HLObject, leave_out: set[str]) -> None:
    """Copy ``src``'s attributes to ``dst`` with their stored types, but ``leave_out``."""
    for key in src.attrs:
        if key not in leave_out:
            dst.attrs.create(key, src.attrs[key], dtype=src.attrs.get_id(key).dtype)
