"""Progress views: log lines at most every interval, stage and epoch reports, the stage table."""

from __future__ import annotations

import logging

import pytest

from sbi_rounds.runtime.progress import (
    EpochInfo,
    EpochProgress,
    PeriodicLines,
    SimulationInfo,
    current_view,
    describe,
    observed_stages,
    showing,
)
from sbi_rounds.stages.round import STAGES


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A view that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stage(self, round_, name):
        self.events.append(("stage", round_, name))

    def simulated(self, info):
        self.events.append(("simulated", info))

    def epoch(self, info):
        self.events.append(("epoch", info))

    def close(self):
        self.events.append(("close",))


def test_periodic_lines_log_each_stage_at_most_every_interval(caplog):
    clock = Clock()
    view = PeriodicLines(logging.getLogger("progress-test"), interval=30, rounds=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="progress-test"):
        view.stage(2, "simulate")
        view.simulated(SimulationInfo(100, 1000, 50.0))
        clock.now += 29
        view.simulated(SimulationInfo(200, 1000, 50.0))
        view.tick()
        assert caplog.messages == []  # a stage shorter than the interval prints nothing
        clock.now += 2
        view.simulated(SimulationInfo(300, 1000, 50.0))
        clock.now += 10
        view.tick()  # nothing new within the interval
        clock.now += 25
        view.tick()  # nothing changed, but a log must say the round is still simulating
        view.stage(2, "train")
        clock.now += 31
        view.epoch(EpochInfo(12, 1.5, 1.2, 8, patience=20, max_epochs=None))
    view.close()
    assert caplog.messages == [
        "round 2/3 simulating: 300/1000 (30%), 50 simulations/s, about 14 s left",
        "round 2/3 simulating: 300/1000 (30%), 50 simulations/s, about 14 s left",
        "round 2/3 training: epoch 12, best validation loss 1.2 at epoch 8 (4 of 20 epochs "
        "of patience used)",
    ]


def test_periodic_lines_keep_talking_from_their_own_thread(caplog):
    view = PeriodicLines(logging.getLogger("progress-beat"), interval=0.2, rounds=1)
    with caplog.at_level(logging.INFO, logger="progress-beat"):
        view.stage(1, "posterior")
        import time

        time.sleep(1.0)
        view.close()
    assert len(caplog.messages) >= 2
    assert caplog.messages[0].startswith("round 1/1 building the posterior (")
    with pytest.raises(ValueError, match="interval must be > 0"):
        PeriodicLines(logging.getLogger("x"), interval=0, rounds=1)


def test_describe_says_counts_rate_and_time_left_or_the_epoch():
    assert describe("simulate", SimulationInfo(0, 10, 0.0), 3) == "simulating: 0/10 (0%)"
    long = describe("simulate", SimulationInfo(10, 100_000, 2.0), 3)
    assert long.endswith("about 13 h 53 min left")
    assert describe("append", None, 75) == "appending simulations (1 min 15 s so far)"
    text = describe("train", EpochInfo(3, 2.0, 1.0, 1, patience=None, max_epochs=50), 0)
    assert text == "training: epoch 3 of at most 50, best validation loss 1 at epoch 1"


def test_epoch_progress_finds_the_best_epoch_in_a_resumed_history():
    class Loop:
        class state:  # noqa: N801 - a stand-in for TrainingState
            epoch = 7
            val_loss = 2.5
            history = {"val_loss": [4.0, 3.0, 1.5, 2.0, 2.2, 2.4, 2.5]}

        class config:  # noqa: N801
            patience = 20
            max_epochs = 100

    view = Recorder()
    EpochProgress(view).on_epoch_end(Loop())
    ((_, info),) = view.events
    assert (info.best_val_loss, info.best_epoch, info.since_best) == (1.5, 3, 4)
    assert (info.patience, info.max_epochs) == (20, 100)


def test_observed_stages_tell_the_view_before_each_stage_runs():
    view = Recorder()
    names = ("sample", "simulate", "append", "train", "posterior", "checkpoint")
    seen = []

    def stage(name):
        return lambda *args, **kwargs: seen.append((name, args, view.events[-1]))

    table = observed_stages(type(STAGES)(**{n: stage(n) for n in names}), view, 4)
    for name in names:
        getattr(table, name)("run", 4)
    assert seen == [(n, ("run", 4), ("stage", 4, n)) for n in names]


def test_showing_sets_the_current_view_and_closes_it():
    view = Recorder()
    assert current_view() is None
    with showing(view):
        assert current_view() is view
    assert current_view() is None and view.events == [("close",)]
