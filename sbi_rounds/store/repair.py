"""Repairing a damaged run file: a new file without the damaged parts, which the run recomputes.

A damaged part of round R (see ``checksums``) is left out of a new copy of the file, and the
round's stage mark goes back to before the stage that made it, so rerunning the run's command
recomputes it (every stage skips what the file shows committed):

=============================================  ==========  =================================
damaged                                        back to     recomputed by the next run
=============================================  ==========  =================================
network weights, training history, checkpoint  APPENDED    training, posterior samples,
                                                           summary, pairplot and checks
posterior samples                              TRAINED     posterior samples, summary,
                                                           pairplot and checks
parameters                                     PLANNED     parameters (drawn again with the
                                                           same seeds) and simulations
simulations, validity or chunk marks           SAMPLED     every chunk's simulations (a
                                                           checksum covers the whole dataset)
simulation counts                              SIMULATED   the counts
saved failed chunks, chunk and stage seconds   (stays)     nothing: dropped or reset
=============================================  ==========  =================================

Anything else (the run's own data, a round's group or its stage, parameter and sample marks)
cannot be repaired. Parameters and simulations drawn again must reproduce the checksums the
damaged datasets carried (kept in :data:`~sbi_rounds.store.checksums.EXPECTED_ATTR` and
checked when they are sealed): the round's network and the later rounds were built on the
old values, so a simulator that does not give the same values for the same seed stops there.

Later rounds are not touched. They depend on round R only through what they stored
themselves: their parameters (drawn from round R's posterior), their networks (trained from
round R's weights, on every round's simulations) and their checks. Training and sampling are
seeded from the run's seed, so round R recomputed on the same versions is bit for bit the
round they were built from.

The new file is written next to the run file and replaces it atomically (``os.replace``), so
an interrupted repair leaves the damaged file as it was. The repair is recorded in the run's
history (``RunStore.config_history``).
"""

from __future__ import annotations

import json
import time

import h5py
import numpy as np

from sbi_rounds.store.checksums import (
    CHECKSUM_ATTR,
    EXPECTED_ATTR,
    DamagedRunError,
    describe,
    verify_file,
)
from sbi_rounds.store.damage import RepairPlan, RoundRepair, damage_message, plan_repair
from sbi_rounds.store.files import StoreFile
from sbi_rounds.store.format import TIMED_STAGES, Stage, allocate

__all__ = ["RepairRecords"]

#: Datasets allocated afresh when left out: (dtype, fill value); shapes from the round.
_FRESH = {
    "theta": (np.float32, np.nan),
    "x": (np.float64, np.nan),
    "valid": (np.uint8, 0),
    "chunk_done": (np.uint8, 0),
    "chunk_seconds": (np.float64, np.nan),
    "posterior_samples": (np.float32, np.nan),
    "timings": (np.float64, np.nan),
    "counts": (np.int64, -1),
}

#: Sealed datasets drawn or simulated again: the new values must match the old checksum.
_REPRODUCED = ("theta", "x", "valid", "chunk_done")


class RepairRecords(StoreFile):
    """Writes a damaged run file again without its damaged parts (see the module's notes)."""

    def repair(self) -> list[str]:
        """Replace the run file by a copy without its damaged parts, with the stage marks of
        their rounds set back so the next run recomputes them; call while holding the lock.

        Returns:
            One line per repaired round (empty: the file is intact, and left untouched).

        Raises:
            DamagedRunError: Part of the damage cannot be repaired; nothing was changed.
            OSError: The new file could not be written (a full disk); nothing was changed.
        """
        damage = self.verify()
        if not damage:
            return []
        plan = plan_repair(damage)
        if plan.unrepairable:
            raise DamagedRunError(damage_message(self.path, damage))
        tmp = self._tmp_path()
        try:
            with self._read() as src, h5py.File(tmp, "w", locking=False) as dst:
                lines = _rebuild(src, dst, plan, self.path)
                left = verify_file(dst)
                if left:  # a bug of this module, never a reason to replace the file
                    raise RuntimeError(f"the repaired copy of {self.path} is damaged: {left}")
            self._publish(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return lines


def _rebuild(src: h5py.File, dst: h5py.File, plan: RepairPlan, path: object) -> list[str]:
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
            lines.append(_rebuild_round(src["rounds"][key], rounds.create_group(key), fix, path))
    history = json.loads(dst.attrs["config_history"])
    history.append({"time": time.time(), "changes": [f"repair: {line}" for line in lines]})
    dst.attrs["config_history"] = json.dumps(history)
    return lines


def _rebuild_round(src: h5py.Group, dst: h5py.Group, fix: RoundRepair, path: object) -> str:
    """Copy a round's group without what ``fix`` leaves out; allocate that afresh."""
    children, attrs = fix.left_out
    _copy_attrs(src, dst, attrs)
    for name in src:
        if name not in children:
            src.copy(name, dst)
    stage = Stage(int(src["stage"][0]))
    for name, (dtype, fill) in _FRESH.items():
        if name not in children:
            continue
        allocate(dst, name, _shape(src, name), dtype, fill)
        if name in _REPRODUCED:
            expected = _old_checksum(src, name)
            if expected is not None:
                dst[name].attrs[EXPECTED_ATTR] = np.uint32(expected)
            elif stage >= Stage.APPENDED:  # sealed once, but its checksum is unreadable
                raise DamagedRunError(
                    f"{path}: {describe(src.name + '/' + name)} cannot be simulated again: "
                    "the checksum the new values must reproduce cannot be read (the round "
                    "was trained on the old ones). Nothing was changed. Restore the file "
                    "from a backup, or start a new run (another --run-id)."
                )
    if "posterior_samples" in children:
        dst["samples_done"][0] = 0
    if "theta" in children:
        dst["theta_done"][0] = 0
    back_to = fix.back_to
    if back_to is not None and stage > back_to:
        dst["stage"][0] = int(back_to)
    after = Stage(int(dst["stage"][0]))
    moved = f"stage {stage.name} -> {after.name}" if after != stage else f"stage {stage.name}"
    return f"round {fix.round}: {fix.summary()}; {moved}"


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
        "x": (n, len(config["xobs"])),
    }
    if name in fixed:
        return fixed[name]
    width = next(
        (int(src[o].shape[1]) for o in ("theta", "posterior_samples") if _readable(src, o)),
        None,
    )
    if width is None:
        raise DamagedRunError(
            f"the number of parameters of round {src.name} cannot be read: its parameters "
            "and posterior samples are both damaged. Restore the file from a backup, or "
            "start a new run (another --run-id)."
        )
    if name == "theta":
        return (n, width)
    return (int(config["posterior"]["num_samples"]), width)


def _readable(group: h5py.Group, name: str) -> bool:
    try:
        group[name].shape  # noqa: B018 - opening the header is the check
    except Exception:  # noqa: BLE001
        return False
    return True


def _old_checksum(src: h5py.Group, name: str) -> int | None:
    try:
        value = src[name].attrs.get(CHECKSUM_ATTR)
    except Exception:  # noqa: BLE001 - a damaged header: no checksum to reproduce
        return None
    return None if value is None else int(value)


def _copy_attrs(src: h5py.HLObject, dst: h5py.HLObject, leave_out: set[str]) -> None:
    """Copy ``src``'s attributes to ``dst`` with their stored types, but ``leave_out``."""
    for key in src.attrs:
        if key not in leave_out:
            dst.attrs.create(key, src.attrs[key], dtype=src.attrs.get_id(key).dtype)
