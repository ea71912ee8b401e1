"""Nested state round-trips through HDF5 without pickle."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from sbi_rounds.store.serialize import read_key, read_nested, write_nested


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


@pytest.mark.parametrize(
    "value",
    [
        [1.5, -2.0, float("inf")],
        (3, 4, -(2**62)),
        [1, 2.5],
        [True, False],
        [],
        (1.0,),
        {7: [0.1] * 300, "k": {"inner": (2, 3)}},
    ],
    ids=["floats", "int-tuple", "mixed", "bools", "empty", "one-float", "nested"],
)
def test_lists_round_trip_with_their_python_types(tmp_path, value):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_nested(f, "v", value)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        back = read_nested(f["v"])
        kinds = {f[name].attrs["__type__"] for name in _names(f)}
    assert back == value
    assert _types(back) == _types(value)
    if value == [0.1] * 300 or isinstance(value, dict):
        assert "list_of_float" in kinds  # a loss history is one dataset, not 300


def _names(f):
    names = []
    f.visit(names.append)
    return names


def _types(value):
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value), [_types(v) for v in value])
    return type(value)


def test_read_key_reads_one_entry_of_a_stored_dict(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_nested(f, "d", {"weights": torch.zeros(3), "epoch": 7, 2: "two"})
        write_nested(f, "l", [1, "a"])
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert read_key(f["d"], "epoch") == 7
        assert read_key(f["d"], 2) == "two"
        with pytest.raises(KeyError, match="no key 'step'"):
            read_key(f["d"], "step")
        with pytest.raises(KeyError, match="no key '2'"):
            read_key(f["d"], "2")  # an int key is not its string
        with pytest.raises(TypeError, match="not a dict"):
            read_key(f["l"], "epoch")
