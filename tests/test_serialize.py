"""Nested state round-trips through HDF5 without pickle."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from sbi_rounds.serialize import read_nested, write_nested


def test_round_trip_of_an_optimizer_and_rng_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": 3,
        "loss": 0.5,
        "flag": True,
        "name": "x",
        "nothing": None,
        "history": [1.0, 2.0],
        "pair": (1, "a"),
        "array": np.arange(3),
    }
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_nested(f, "state", state)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        back = read_nested(f["state"])
    assert back["epoch"] == 3 and back["flag"] is True and back["nothing"] is None
    assert back["pair"] == (1, "a") and back["history"] == [1.0, 2.0]
    assert torch.equal(back["rng"], state["rng"])
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)


def test_unknown_types_are_refused_instead_of_pickled(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f, pytest.raises(TypeError, match="cannot store"):
        write_nested(f, "x", {"fn": lambda: 1})
