"""What damage in a run file means: the message that names it, and what a repair does.

:func:`plan_repair` sorts the damage ``checksums.verify_file`` found into what a repair
(``sbi_rounds.store.repair``) recomputes, per round, and what it cannot repair;
:func:`damage_message` names both for a person, with the ways out. Neither reads the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sbi_rounds.store.checksums import Damage, describe
from sbi_rounds.store.format import Stage
from sbi_rounds.store.schema import (
    CALIBRATION,
    DIAGNOSTICS,
    PAIRPLOT,
    POSTERIOR_SUMMARY,
    TRAINING_ATTEMPTS,
    TRAINING_SUMMARY,
)

__all__ = [
    "RepairPlan",
    "RoundRepair",
    "damage_message",
    "damage_summary",
    "damaged_part",
    "plan_repair",
]

#: A damaged part of a round (its name in the round's group) -> what is recomputed.
_RECOMPUTE = {
    "network": "training",
    "history": "training",
    "training_checkpoint": "training",
    "posterior_samples": "posterior",
    "samples_done": "posterior",
    "theta": "parameters",
    "theta_done": "parameters",
    "x": "simulations",
    "valid": "simulations",
    "chunk_done": "simulations",
    "counts": "counts",
    "failures": "dropped",
    "chunk_seconds": "dropped",
    "timings": "dropped",
}

#: What is recomputed -> the stage the round goes back to (at most).
_BACK_TO = {
    "training": Stage.APPENDED,
    "posterior": Stage.TRAINED,
    "parameters": Stage.PLANNED,
    "simulations": Stage.SAMPLED,
    "counts": Stage.SIMULATED,
}

#: What is recomputed -> what else that implies.
_IMPLIES = {"training": {"posterior"}, "parameters": {"simulations"}}

#: What is recomputed -> (the round's children left out, attributes left out).
_LEAVE_OUT = {
    "training": (
        {"network", "history", "training_checkpoint"},
        {TRAINING_ATTEMPTS, TRAINING_SUMMARY, CALIBRATION},
    ),
    "posterior": (
        {"posterior_samples", "samples_done"},
        {POSTERIOR_SUMMARY, PAIRPLOT, DIAGNOSTICS},
    ),
    "parameters": ({"theta", "theta_done"}, set()),
    "simulations": ({"x", "valid", "chunk_done", "chunk_seconds", "counts"}, set()),
    "counts": ({"counts"}, set()),
}


@dataclass(frozen=True)
class RoundRepair:
    """What a repair does to one round: the damaged parts and what is recomputed."""

    round: int
    damage: tuple[Damage, ...]
    recompute: frozenset[str]

    @property
    def back_to(self) -> Stage | None:
        """The stage the round goes back to at most (None: its stage stays)."""
        stages = [_BACK_TO[r] for r in self.recompute if r in _BACK_TO]
        return min(stages) if stages else None

    @property
    def left_out(self) -> tuple[set[str], set[str]]:
        """The round's children and attributes the new file leaves out."""
        children = {damaged_part(d) for d in self.damage}
        attrs: set[str] = set()
        for what in self.recompute:
            c, a = _LEAVE_OUT.get(what, (set(), set()))
            children |= c
            attrs |= a
        return children, attrs

    def summary(self) -> str:
        """One line for a person: what was left out and what the next run recomputes."""
        parts = ", ".join(
            sorted({describe(f"rounds/{self.round:04d}/{damaged_part(d)}") for d in self.damage})
        )
        redo = [_WORDS[w] for w in _WORDS if w in self.recompute]
        if not redo:
            return f"{parts} left out (records only, nothing to recompute)"
        return f"{parts} left out; the next run recomputes its " + ", ".join(redo)


#: What is recomputed, in the order it happens, as a person says it.
_WORDS = {
    "parameters": "parameters (drawn again from its proposal)",
    "simulations": "simulations",
    "counts": "simulation counts",
    "training": "training",
    "posterior": "posterior samples, summary and checks",
}


@dataclass(frozen=True)
class RepairPlan:
    """What :meth:`RepairRecords.repair` does: per round, and what cannot be repaired."""

    rounds: dict[int, RoundRepair] = field(default_factory=dict)
    unrepairable: tuple[Damage, ...] = ()


def damaged_part(damage: Damage) -> str:
    """The name of the damaged part in its round's group (``"network"``, ``"x"``; ``""``
    for the run's own data or a round's group itself)."""
    parts = damage.path.strip("/").split("/")
    return parts[2] if len(parts) > 2 and parts[0] == "rounds" else ""


def plan_repair(damage: list[Damage]) -> RepairPlan:
    """Sort the damage of a run file into what a repair recomputes, per round, and what it
    cannot repair."""
    per_round: dict[int, list[Damage]] = {}
    unrepairable: list[Damage] = []
    for d in damage:
        if d.round is None or damaged_part(d) not in _RECOMPUTE:
            unrepairable.append(d)
        else:
            per_round.setdefault(d.round, []).append(d)
    rounds = {}
    for r, found in sorted(per_round.items()):
        recompute = {_RECOMPUTE[damaged_part(d)] for d in found}
        for what in list(recompute):
            recompute |= _IMPLIES.get(what, set())
        recompute.discard("dropped")
        rounds[r] = RoundRepair(round=r, damage=tuple(found), recompute=frozenset(recompute))
    return RepairPlan(rounds=rounds, unrepairable=tuple(unrepairable))


def damage_summary(damage: Sequence[Damage]) -> str:
    """A short account of damage (one round's, say): the round files that are missing or
    cannot be read, then the other damaged parts, e.g. ``"its file run.round-0002.h5
    cannot be read"``."""
    files: dict[str, str] = {}
    parts: list[str] = []
    for d in damage:
        m = re.match(r"its file (\S+) (is missing|cannot be read)", d.problem)
        if m:
            files.setdefault(m.group(1), m.group(2))
        elif describe(d.path) not in parts:
            parts.append(describe(d.path))
    words = [f"its file {name} {what}" for name, what in files.items()]
    if parts:
        words.append(", ".join(parts) + (" are" if len(parts) > 1 else " is") + " damaged")
    return "; ".join(words)


def _damage_lines(damage: Sequence[Damage]) -> list[str]:
    """One line per damaged part, but one for all the parts a round file that is missing or
    cannot be read held (``round 2's file run.round-0002.h5 cannot be read (...): its
    parameters, ... are lost``)."""
    groups: dict[tuple[object, ...], list[Damage]] = {}
    order: list[Damage | tuple[object, ...]] = []
    for d in damage:
        m = re.match(r"its file (\S+) (is missing|cannot be read)(?:: (.*))?$", d.problem, re.S)
        if m is None:
            order.append(d)
            continue
        key = (d.round, *m.groups())
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(d)
    lines = []
    for item in order:
        if isinstance(item, Damage) or len(groups[item]) == 1:
            lines.append(f"  {item if isinstance(item, Damage) else groups[item][0]}")
            continue
        round_, name, what, error = item
        parts = ", ".join(describe(d.path).split("'s ", 1)[-1] for d in groups[item])
        detail = f" ({error})" if error else ""
        lines.append(f"  round {round_}'s file {name} {what}{detail}: its {parts} are lost")
    return lines


#: A round's parts that hold its simulations (the rest can be computed from them).
_SIMULATED = ("theta", "x", "valid", "chunk_done")


def damage_message(path: object, damage: list[Damage], *, on_read: bool = False) -> str:
    """One message naming every damaged part of run file ``path`` and the ways out.

    ``on_read``: found when the data was read (not by the start-up check), so the run may
    have committed new work since it started; the message says that it is kept.
    """
    rounds = sorted({d.round for d in damage if d.round is not None})
    intact = [
        r for r in rounds if not any(d.round == r and damaged_part(d) in _SIMULATED for d in damage)
    ]
    lines = [f"{path} is damaged:", *_damage_lines(damage)]
    if intact and not on_read:  # found on read: the rest of the round was not looked at
        which = ", ".join(str(r) for r in intact)
        lines.append(f"The simulations of round(s) {which} are intact.")
    plan = plan_repair(damage)
    unchanged = (
        "Found when it was read: nothing was built from it, and what the run committed "
        "before is kept."
        if on_read
        else "Nothing was changed."
    )
    run = Path(str(path))
    run = run.parent if run.name == "run.h5" else run
    if not plan.unrepairable:
        which = ", ".join(str(r) for r in plan.rounds)
        lines.append(
            f"{unchanged} Repair it with: sbi-rounds verify {run} --repair\n"
            f"(it writes the file again without the damaged parts of round(s) {which} and "
            "sets their stage back; rerunning the run's command then recomputes them). Or "
            "restore the file from a backup, or start a new run (another --run-id)."
        )
    else:
        in_rounds = all(d.round is not None for d in plan.unrepairable)
        lines.append(
            f"{unchanged} This damage cannot be repaired ("
            + ", ".join(describe(d.path) for d in plan.unrepairable)
            + "). Restore the file from a backup, or start a new run (another --run-id); "
            + (f"sbi-rounds export {run} still writes the intact rounds, and " if in_rounds else "")
            + "sbi-rounds verify lists the damage again."
        )
    return "\n".join(lines)
