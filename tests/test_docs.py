"""The documentation: the site builds without a warning, and every docstring example runs.

The site (``mkdocs.yml``, ``docs/``, the API reference from the docstrings) is built with
``mkdocs build --strict``, so a broken link, a missing page or an API name that no longer
resolves fails here. Every ``>>>`` example in the docstrings of ``sbi_rounds/``, ``flows/``
and ``tasks/`` runs as a doctest, seeded (``conftest._seed``), in a directory that holds the
small finished run they name (``runs/snpe-1a2b3c4d5e``).
"""

from __future__ import annotations

import doctest
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import sbi_rounds

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: The modules whose examples run: every one of the packages' with a ``>>>`` in its source.
DOCTEST_MODULES = sorted(
    _module_name(path)
    for package in ("sbi_rounds", "flows", "tasks")
    for path in (ROOT / package).rglob("*.py")
    if ">>>" in path.read_text()
)


def test_the_site_builds_without_a_warning(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    site = tmp_path / "site"
    for page in ("index.html", "getting-started.html", "api/training.html", "benchmarks.html"):
        assert (site / page).is_file(), page
    # the API reference is rendered from the docstrings, not left as `::: name` lines
    api = (site / "api" / "results.html").read_text()
    assert "load_posterior" in api and ":::" not in api
    # the table of every setting is written from the settings model
    assert "--training.batch-size" in (site / "settings.html").read_text()


def test_every_public_name_is_in_the_api_reference():
    pages = [p.read_text() for p in sorted((ROOT / "docs" / "api").glob("*.md"))]
    rendered = {m.split(".")[-1] for p in pages for m in re.findall(r"^::: ([\w.]+)", p, re.M)}
    listed = {n for n in sbi_rounds.__all__ if f"`sbi_rounds.{n}`" in "".join(pages)}
    missing = sorted(set(sbi_rounds.__all__) - (rendered & listed))
    assert missing == [], (
        f"list {missing} in docs/api/index.md and render each (::: module.name) on a page"
    )


def test_the_readme_links_into_the_site():
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


@pytest.fixture(scope="session")
def small_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``runs/snpe-1a2b3c4d5e``: one round of 100 simulations, 2 epochs."""
    from distributed import Client

    from sbi_rounds import RunConfig, run_round, run_session

    where = tmp_path_factory.mktemp("doctest-run")
    config = RunConfig(
        xobs=[0.5, -0.3],
        rounds=1,
        simulations_per_round=100,
        run_dir=str(where / "runs"),
        run_id="snpe-1a2b3c4d5e",
        training={"max_epochs": 2, "checkpoint_every": 0},
        network={"model": "maf", "hidden_features": 8, "num_transforms": 1},
        posterior={"num_samples": 50},
        logger={"backend": "none"},
        cluster={"chunk_size": 50},
        diagnostics={"calibration_simulations": 0, "predictive_simulations": 0},
    )
    with (
        Client(
            processes=False,
            n_workers=1,
            threads_per_worker=1,
            dashboard_address=":0",
            set_as_default=False,  # other tests' shared client stays the default
        ) as c,
        run_session(config) as run,
    ):
        run_round(run, 1, c, pairplot=False)
    return where


@pytest.fixture
def in_small_run_dir(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.chdir(request.getfixturevalue("small_run_dir"))
    yield


def test_the_public_modules_examples_are_among_those_run():
    public = {getattr(sbi_rounds, name).__module__ for name in sbi_rounds.__all__}
    with_examples = {m for m in public if ">>>" in Path(sys.modules[m].__file__).read_text()}
    assert {"sbi_rounds", "sbi_rounds.store"} <= set(DOCTEST_MODULES)
    assert with_examples <= set(DOCTEST_MODULES)


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_the_docstring_examples_run(name, request):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f"{name} has a >>> that is not in a docstring the doctests find"
    if any("runs/" in e.source for t in tests for e in t.examples):
        request.getfixturevalue("in_small_run_dir")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
