"""The unified training runner: config, stopping rules, callbacks, checkpoints, resume."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from sbi_rounds.training import (
    Callback,
    CheckpointCallback,
    Divergence,
    LearningRateThreshold,
    SchedulerConfig,
    StopWhen,
    TrainConfig,
    ValidationLossPatience,
    run_training,
)
from sbi_rounds.training.config import resolve_batch_size, resolve_retrain_from_scratch


def _data(n=400):
    x = torch.randn(n, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n)
    return x, y


def _mse(model, batch):
    return (model(batch[0]).squeeze(-1) - batch[1]) ** 2


def _model():
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


class MemorySink:
    def __init__(self):
        self.state = None
        self.saves = 0

    def save(self, state):
        import copy

        self.state = copy.deepcopy(state)
        self.saves += 1

    def load(self):
        return self.state


def test_trains_and_summarises():
    s = run_training(TrainConfig(max_epochs=30, learning_rate=1e-2), _model(), _mse, _data())
    assert s.epochs == 30 and s.stop_reason == "reached max_epochs=30"
    assert s.history["val_loss"][-1] < 0.3 * s.history["val_loss"][0]
    assert s.best_val_loss == min(s.history["val_loss"])
    # 360 training rows: batch_size="auto" gives two even batches of 180 (at most sbi's 200)
    assert len(s.history["learning_rate"]) == 30 and s.batch_size == 180 and s.steps == 30 * 2


@pytest.mark.parametrize(
    ("rows", "batch"),
    [(1, 1), (10, 10), (90, 90), (200, 200), (201, 101), (900, 180), (1800, 200), (90_001, 200)],
)
def test_auto_batch_size_is_at_most_200_in_even_batches(rows, batch):
    assert resolve_batch_size("auto", rows) == batch
    assert resolve_batch_size(64, rows) == 64


def test_patience_waits_for_its_floor_in_optimizer_steps_too():
    """With one step an epoch, patience 3 alone stops within a few epochs of the best; with
    a floor of 40 steps it waits 40 epochs (steps) after the best before stopping."""
    data = _data()
    config = dict(max_epochs=2000, learning_rate=0.3, patience=3, batch_size=400)
    epochs_only = run_training(TrainConfig(**config, patience_steps=None), _model(), _mse, data)
    floored = run_training(TrainConfig(**config, patience_steps=40), _model(), _mse, data)
    assert epochs_only.steps == epochs_only.epochs  # one batch an epoch
    assert epochs_only.epochs - epochs_only.best_epoch == 3
    assert floored.epochs - floored.best_epoch == 40
    assert "for 40 epochs and 40 steps" in floored.stop_reason
    with pytest.raises(ValidationError, match="patience_steps"):
        TrainConfig(patience_steps=0)
    with pytest.raises(ValueError, match="min_steps must be an integer >= 1"):
        ValidationLossPatience(3, min_steps=0)


def test_sbi_keywords_map_onto_the_typed_config():
    c = TrainConfig(
        training_batch_size=64,
        learning_rate=1e-3,
        stop_after_epochs=7,
        max_num_epochs=50,
        clip_max_norm=1.0,
        show_train_summary=True,
        resume_training=False,
        retrain_from_scratch=True,
        validation_fraction=0.2,
    )
    assert (c.batch_size, c.patience, c.max_epochs, c.clip_grad_norm) == (64, 7, 50, 1.0)
    assert c.show_summary and not c.resume and c.retrain_from_scratch
    assert TrainConfig.from_sbi(training_batch_size=10, max_epochs=3).batch_size == 10
    with pytest.raises(ValidationError, match="both training_batch_size=10.*batch_size=20"):
        TrainConfig(training_batch_size=10, batch_size=20)


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="validation_fraction"):
        TrainConfig(validation_fraction=1.5)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrainConfig(batchsize=3)
    with pytest.raises(ValidationError, match="never stop"):
        TrainConfig(patience=None)
    with pytest.raises(TypeError, match="must be a TrainConfig"):
        run_training({"max_epochs": 1}, _model(), _mse, _data())


def test_patience_stops_and_restores_the_best_weights():
    model = _model()
    best = {}

    class Spy(Callback):
        def on_validation_end(self, loop):
            if loop.state.val_loss <= min(loop.state.history["val_loss"] + [math.inf]):
                best["w"] = loop.get_weights()

    # A too-high learning rate makes the validation loss bounce, so patience triggers.
    s = run_training(
        TrainConfig(max_epochs=500, learning_rate=0.3, patience=3, batch_size=50),
        model,
        _mse,
        _data(),
        callbacks=[Spy()],
    )
    assert s.epochs < 500 and "did not improve" in s.stop_reason
    for k, v in model.state_dict().items():
        assert torch.equal(v, best["w"][k])


def test_learning_rate_threshold_and_schedulers():
    cfg = TrainConfig(
        max_epochs=100,
        patience=None,
        min_lr=1e-3,
        learning_rate=1e-2,
        scheduler=SchedulerConfig(kind="step", step_size=2, gamma=0.5),
    )
    s = run_training(cfg, _model(), _mse, _data())
    assert "fell below min_lr" in s.stop_reason and s.history["learning_rate"][-1] < 1e-3
    for kind in ("cosine", "exponential", "plateau"):
        cfg = TrainConfig(max_epochs=3, scheduler=SchedulerConfig(kind=kind))
        assert run_training(cfg, _model(), _mse, _data()).epochs == 3


def test_divergence_stops_when_validation_runs_away():
    x, y = _data()
    train, val = (x[:300], y[:300]), (x[300:], y[300:] + 50.0)  # validation from elsewhere
    s = run_training(
        TrainConfig(max_epochs=50, patience=None),
        _model(),
        _mse,
        train,
        val,
        callbacks=[Divergence(ratio=2.0, checks=3)],
    )
    assert s.epochs == 3 and "diverging" in s.stop_reason


def test_external_stopping_rules_plug_in():
    s = run_training(
        TrainConfig(max_epochs=50),
        _model(),
        _mse,
        _data(),
        callbacks=[StopWhen(lambda state: state.epoch >= 4 and "enough")],
    )
    assert s.epochs == 4 and s.stop_reason == "enough"


def test_callback_exceptions_propagate_and_hooks_are_checked():
    seen = []

    class Boom(Callback):
        def on_epoch_end(self, loop):
            raise RuntimeError("callback failed")

        def on_exception(self, loop, error):
            seen.append(error)

    with pytest.raises(RuntimeError, match="callback failed"):
        run_training(TrainConfig(max_epochs=3), _model(), _mse, _data(), callbacks=[Boom()])
    assert len(seen) == 1
    with pytest.raises(TypeError, match="not training events"):

        class Misspelled(Callback):  # noqa: F841
            def on_epoch_ends(self, loop):
                pass


def test_callbacks_steer_only_through_loop_methods():
    class Warmup(Callback):
        def on_epoch_start(self, loop):
            loop.set_learning_rate(1e-4 if loop.state.epoch < 2 else 1e-2)

    s = run_training(TrainConfig(max_epochs=4), _model(), _mse, _data(), callbacks=[Warmup()])
    assert s.history["learning_rate"] == [1e-4, 1e-4, 1e-2, 1e-2]


def test_limits_steps_time_accumulation_and_ema():
    assert run_training(TrainConfig(max_steps=5), _model(), _mse, _data()).steps == 5
    s = run_training(TrainConfig(max_time=0.2, patience=None), _model(), _mse, _data(2000))
    assert "max_time" in s.stop_reason
    s = run_training(
        TrainConfig(max_epochs=2, grad_accumulation=2, batch_size=50), _model(), _mse, _data()
    )
    assert s.steps == 2 * 4  # 360 training rows -> 7 batches of 50 -> 4 steps per epoch
    model = _model()
    s = run_training(
        TrainConfig(max_epochs=20, ema_decay=0.9, learning_rate=1e-2), model, _mse, _data()
    )
    assert s.history["val_loss"][-1] < s.history["val_loss"][0]


def test_data_loaders_are_accepted():
    x, y = _data()
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=50, shuffle=True)
    s = run_training(TrainConfig(max_epochs=2), _model(), _mse, loader, loader)
    assert s.epochs == 2


def test_non_finite_losses_fail_with_advice():
    def nan_loss(model, batch):
        return model(batch[0]).squeeze(-1) * float("nan")

    with pytest.raises(FloatingPointError, match="lower learning_rate"):
        run_training(TrainConfig(max_epochs=2), _model(), nan_loss, _data())


def test_caller_rng_is_untouched_and_runs_are_reproducible():
    data = _data()
    a, b = _model(), _model()
    b.load_state_dict(a.state_dict())
    state = torch.get_rng_state()
    s1 = run_training(TrainConfig(max_epochs=5, seed=3), a, _mse, data)
    s2 = run_training(TrainConfig(max_epochs=5, seed=3), b, _mse, data)
    assert torch.equal(torch.get_rng_state(), state)
    assert s1.history["val_loss"] == s2.history["val_loss"]
    for k in a.state_dict():
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])


def _noisy_loss(model, batch):
    """Uses the global RNG inside the loss, like the atomic loss does."""
    noise = 0.1 * torch.randn_like(batch[1])
    return (model(batch[0]).squeeze(-1) - batch[1] - noise) ** 2


@pytest.mark.parametrize("ema", [None, 0.9])
def test_an_interrupted_training_resumes_to_the_same_result(ema):
    data = _data()
    cfg = TrainConfig(
        max_epochs=12,
        seed=1,
        ema_decay=ema,
        patience=4,
        scheduler=SchedulerConfig(kind="step", step_size=3),
    )
    reference = _model()
    init = {k: v.clone() for k, v in reference.state_dict().items()}
    s_ref = run_training(
        cfg, reference, _noisy_loss, data, callbacks=[CheckpointCallback(MemorySink(), every=2)]
    )

    class Crash(Callback):
        def on_epoch_end(self, loop):
            if loop.state.epoch == 7:
                raise KeyboardInterrupt

    sink = MemorySink()
    model = _model()
    model.load_state_dict(init)
    with pytest.raises(KeyboardInterrupt):
        run_training(
            cfg, model, _noisy_loss, data, callbacks=[CheckpointCallback(sink, every=2), Crash()]
        )
    assert sink.state["epoch"] == 6
    resumed = _model()  # a fresh process: new weights, restored from the checkpoint
    s = run_training(cfg, resumed, _noisy_loss, data, callbacks=[CheckpointCallback(sink, every=2)])
    assert s.resumed_from_epoch == 6
    for key in ("train_loss", "val_loss", "learning_rate"):
        assert s.history[key] == s_ref.history[key]
    assert s.epochs == s_ref.epochs and s.stop_reason == s_ref.stop_reason
    for k, v in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v)


def test_a_checkpoint_from_other_callbacks_is_refused():
    sink = MemorySink()
    run_training(
        TrainConfig(max_epochs=2),
        _model(),
        _mse,
        _data(),
        callbacks=[CheckpointCallback(sink, every=1)],
    )
    with pytest.raises(ValueError, match="holds the state of callbacks.*ValidationLossPatience"):
        run_training(
            TrainConfig(max_epochs=4, patience=None),
            _model(),
            _mse,
            _data(),
            callbacks=[CheckpointCallback(sink, every=1)],
        )


def test_patience_callback_validates_and_resets():
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        ValidationLossPatience(0)
    with pytest.raises(ValueError, match="min_lr must be > 0"):
        LearningRateThreshold(0)
    cb = ValidationLossPatience(2)
    for _ in range(2):  # one instance serves many fits
        s = run_training(
            TrainConfig(max_epochs=5, patience=None), _model(), _mse, _data(), callbacks=[cb]
        )
        assert cb.best == min(s.history["val_loss"])


@pytest.mark.gpu
def test_cuda_training_matches_cpu_closely():
    data = _data()
    a, b = _model(), _model()
    b.load_state_dict(a.state_dict())
    cpu = run_training(TrainConfig(max_epochs=5), a, _mse, data)
    gpu = run_training(TrainConfig(max_epochs=5, device="cuda"), b, _mse, data)
    assert next(b.parameters()).device.type == "cuda"
    assert abs(cpu.best_val_loss - gpu.best_val_loss) < 1e-3 * max(1.0, abs(cpu.best_val_loss))


def test_flat_parameters_train_like_separate_ones():
    """The default optimizer steps one flat buffer; a user's Adam over the separate
    parameters (the same math) reaches the same weights, and the model stays usable."""
    from sbi_rounds.training import flatten_parameters

    data = _data()
    cfg = TrainConfig(max_epochs=5, learning_rate=1e-2, clip_grad_norm=1.0, seed=3)
    torch.manual_seed(0)
    flat_model, plain_model = _model(), _model()
    plain_model.load_state_dict(flat_model.state_dict())
    run_training(cfg, flat_model, _mse, data)
    user_adam = torch.optim.Adam(plain_model.parameters(), lr=1e-2)
    run_training(cfg, plain_model, _mse, data, optimizer=user_adam)
    for (k, a), b in zip(
        flat_model.state_dict().items(), plain_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    # the weights are views of one buffer, and load_state_dict writes through them
    params = list(flat_model.parameters())
    assert len({p.untyped_storage().data_ptr() for p in params}) == 1
    flat_model.load_state_dict(plain_model.state_dict())
    assert flatten_parameters(nn.Linear(2, 2).to(torch.float64)) is not None
    shared = nn.Linear(2, 2)
    tied = nn.Sequential(shared, shared)
    assert flatten_parameters(tied) is not None  # shared modules give each tensor once


def test_checkpoints_are_spaced_by_min_seconds():
    sink = MemorySink()
    run_training(
        TrainConfig(max_epochs=6, patience=None),
        _model(),
        _mse,
        _data(),
        callbacks=[CheckpointCallback(sink, every=1, min_seconds=3600)],
    )
    assert sink.saves == 0
    run_training(
        TrainConfig(max_epochs=6, patience=None),
        _model(),
        _mse,
        _data(),
        callbacks=[CheckpointCallback(sink, every=1, min_seconds=0)],
    )
    assert sink.saves == 6  # every epoch
    with pytest.raises(ValueError, match="min_seconds"):
        CheckpointCallback(sink, min_seconds=-1)


@pytest.mark.parametrize(
    ("setting", "simulations", "scratch_from", "fresh"),
    [
        ("auto", 1999, 2000, False),
        ("auto", 2000, 2000, True),
        ("auto", 10**6, None, False),  # a method that always continues
        (True, 100, None, True),
        (False, 10**6, 2000, False),
    ],
)
def test_retrain_from_scratch_auto_follows_the_methods_threshold(
    setting, simulations, scratch_from, fresh
):
    assert resolve_retrain_from_scratch(setting, simulations, scratch_from) is fresh


def test_retrain_from_scratch_takes_auto_or_a_boolean_and_names_the_field():
    assert TrainConfig().retrain_from_scratch == "auto"
    assert TrainConfig(retrain_from_scratch=True).retrain_from_scratch is True
    with pytest.raises(ValueError, match="retrain_from_scratch"):
        TrainConfig(retrain_from_scratch="sometimes")
