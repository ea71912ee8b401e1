"""Observation tables as users keep them: a header row of names, a column of ids."""

from __future__ import annotations

import re

import pytest

from sbi_rounds.campaign import format_summary, observation_configs, summarize
from sbi_rounds.config import CampaignConfig
from sbi_rounds.diagnostics.stage import diagnose
from sbi_rounds.lifecycle.session import run_session
from sbi_rounds.observations import read_observations
from sbi_rounds.report.document import render_report
from sbi_rounds.stages.round import run_round

TABLE = "galaxy,flux,colour\nngc-1,0.5,-0.3\nngc-2,0.1,0.2\nm31,-0.4,0.6\n"


def test_a_header_row_names_the_columns_and_an_id_column_the_observations(tmp_path):
    (tmp_path / "obs.csv").write_text(TABLE)
    spec = str(tmp_path / "obs.csv")
    table = read_observations(spec, id_column="galaxy")
    assert table.names == ["flux", "colour"]
    assert table.ids == ["ngc-1", "ngc-2", "m31"]
    assert table.values.tolist() == [[0.5, -0.3], [0.1, 0.2], [-0.4, 0.6]]
    campaign = CampaignConfig(observations=spec, directory="c", id_column="galaxy")
    configs = observation_configs(campaign, {"rounds": 2})
    assert [str(c.run_path) for c in configs] == [
        f"c/{i}/run.h5" for i in ("ngc-1", "ngc-2", "m31")
    ]
    assert all(c.x_names == ["flux", "colour"] for c in configs)
    summary = format_summary(summarize(configs))
    assert "m31" in summary and "flux=-0.4 colour=0.6" in summary


def test_a_header_without_an_id_column_keeps_numbered_directories(tmp_path):
    (tmp_path / "obs.csv").write_text("a,b\n1,2\n3,4\n")
    campaign = CampaignConfig(observations=str(tmp_path / "obs.csv"), directory="c")
    configs = observation_configs(campaign, {})
    assert [c.resolved_run_id for c in configs] == ["obs-0000", "obs-0001"]
    assert [c.x_names for c in configs] == [["a", "b"], ["a", "b"]]
    assert [c.xobs for c in configs] == [[1.0, 2.0], [3.0, 4.0]]
    plain = tmp_path / "plain.csv"  # no header: as before, unnamed
    plain.write_text("1,2\n3,4\n")
    assert read_observations(str(plain)).names is None


@pytest.mark.parametrize(
    ("content", "id_column", "message"),
    [
        (TABLE, None, "line 2, column 'galaxy': 'ngc-1' is not a number; a column of ids?"),
        (TABLE, "name", "has no column 'name' (campaign.id_column); its columns are galaxy"),
        ("1,2\n3,4\n", "galaxy", "needs a .csv table with a header row"),
        ("id,x\na/b,1\nc,2\n", "id", "ids ['a/b'] cannot name directories"),
        ("id,x\na,1\na,2\n", "id", "ids ['a'] appear more than once"),
        ("id,x\na,1\nb\n", "id", "line 3: 1 fields, the header has 2"),
        ("x,x\n1,2\n", None, "column names must be unique"),
        ("id,x\n", "id", "must hold a table (N, K)"),
        ("id,x\na,nan\n", "id", "rows [0] hold NaN"),
    ],
    ids=["ids-unnamed", "no-such-column", "no-header", "bad-id", "repeated-id", "short-row",
         "repeated-name", "header-only", "nan"],
)  # fmt: skip
def test_bad_tables_are_refused_in_one_line(tmp_path, content, id_column, message):
    (tmp_path / "obs.csv").write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        read_observations(str(tmp_path / "obs.csv"), id_column=id_column)
    assert "\n" not in str(caught.value)


def test_x_names_that_contradict_the_header_are_refused(tmp_path):
    (tmp_path / "obs.csv").write_text("a,b\n1,2\n")
    campaign = CampaignConfig(observations=str(tmp_path / "obs.csv"))
    assert observation_configs(campaign, {"x_names": ["a", "b"]})[0].x_names == ["a", "b"]
    with pytest.raises(ValueError, match=r"x_names \['p', 'q'\] differ from the header"):
        observation_configs(campaign, {"x_names": ["p", "q"]})
    (tmp_path / "plain.csv").write_text("1,2\n3,4\n")
    plain = CampaignConfig(observations=str(tmp_path / "plain.csv"))
    with pytest.raises(ValueError, match="x_names has 1 names but xobs has 2 values"):
        observation_configs(plain, {"x_names": ["a"]})


def test_the_names_label_the_predictive_check_and_the_report(tmp_path, make_config, dask_client):
    (tmp_path / "obs.csv").write_text("galaxy,flux,colour\nngc-1,0.5,-0.3\n")
    campaign = CampaignConfig(
        observations=str(tmp_path / "obs.csv"), directory=str(tmp_path / "c"), id_column="galaxy"
    )
    checks = {"predictive_simulations": 20, "map_iterations": 0}
    base = make_config(rounds=1, simulations_per_round=100, diagnostics=checks)
    shared = base.model_dump(exclude={"xobs", "run_dir", "run_id"})
    (config,) = observation_configs(campaign, shared)
    with run_session(config) as run:
        run_round(run, 1, dask_client, pairplot=False)
        diagnose(run, 1, dask_client)
        check = run.store.diagnostics(1).predictive
        page = render_report(run)
    assert set(check.statistics) == {"flux", "colour"}
    assert "flux=0.5, colour=-0.3" in page
    assert (tmp_path / "c" / "ngc-1" / "run.h5").is_file()
