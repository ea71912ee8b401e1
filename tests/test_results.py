"""Opening a run from Python (``sbi_rounds.report.results``) without running code the run names."""

from __future__ import annotations

import sys

import pytest
import torch
from sbi.utils import BoxUniform

from sbi_rounds.builders.priors import StoredPrior
from sbi_rounds.config import RunConfig
from sbi_rounds.errors import CodeChangedError
from sbi_rounds.lifecycle.fingerprint import code_fingerprint
from sbi_rounds.report.results import load_run
from sbi_rounds.store import RunStore

FACTORY = """
open({marker!r}, "a").write("imported\\n")
import torch
from sbi.utils import BoxUniform


def prior():
    return BoxUniform(torch.zeros(2), torch.ones(2) * {high})
"""


def _run(tmp_path, prior):
    config = RunConfig(xobs=[0.5, -0.3], prior=prior, run_dir=str(tmp_path / "runs"))
    code = code_fingerprint(config.simulator, config.prior)
    RunStore.create(
        config.run_path, config=config.model_dump(mode="json"), fingerprint="f", code=code
    )
    return config.run_path


@pytest.fixture
def factory(tmp_path, monkeypatch):
    """``write(high)`` (re)writes the module ``user_prior_for_results``, which records in
    the file ``imported`` each time it is imported."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    marker = tmp_path / "imported"

    def write(high: float = 2.0) -> None:
        path = tmp_path / "user_prior_for_results.py"
        path.write_text(FACTORY.format(marker=str(marker), high=high))
        sys.modules.pop("user_prior_for_results", None)
        marker.unlink(missing_ok=True)

    yield write, marker
    sys.modules.pop("user_prior_for_results", None)


def test_a_box_prior_or_one_of_the_packages_examples_is_built(tmp_path):
    box = load_run(_run(tmp_path / "a", {"low": [0, 0], "high": [1, 2]})).prior
    assert isinstance(box, BoxUniform) and box.sample((3,)).shape == (3, 2)
    ours = load_run(_run(tmp_path / "b", {"path": "sbi_rounds.examples:gaussian_linear_prior"}))
    assert not isinstance(ours.prior, StoredPrior) and ours.theta_dim == 10


def test_a_user_prior_factory_is_imported_only_when_asked_and_if_unchanged(tmp_path, factory):
    write, marker = factory
    write()
    path = _run(tmp_path, {"path": "user_prior_for_results:prior"})
    write()  # its record of the import for the fingerprint cleared
    run = load_run(path)
    assert isinstance(run.prior, StoredPrior) and not marker.exists()
    with pytest.raises(ValueError, match=r"prior is code \(user_prior_for_results:prior\)"):
        run.prior.log_prob(torch.zeros(2))
    with pytest.raises(ValueError, match="import_code=True"):
        run.prior.sample((1,))  # no round drew from it yet: no stored draws
    assert not marker.exists()
    prior = load_run(path, import_code=True).prior
    assert isinstance(prior, BoxUniform) and marker.exists()
    write(high=3.0)  # the module's file changed since the run recorded it
    with pytest.raises(CodeChangedError, match=r"prior.module: sha256:.*nothing was imported"):
        load_run(path, import_code=True)
    assert not marker.exists()


def test_stored_prior_draws_are_drawn_again():
    draws = torch.arange(10.0).reshape(5, 2)
    prior = StoredPrior(draws, "m:f")
    sample = prior.sample((4, 3))
    assert sample.shape == (4, 3, 2)
    rows = {tuple(r) for r in draws.tolist()}
    assert all(tuple(r) in rows for r in sample.reshape(-1, 2).tolist())
