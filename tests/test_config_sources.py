"""Where settings come from (``sbi_rounds.config.sources``, ``files``): pydantic-settings'
environment and file sources, read as a user types values, and their errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.cli.campaign import build_settings
from flows.cli.campaign import parser as campaign_parser
from sbi_rounds.config import RunConfig, format_validation_error, load_config_file
from sbi_rounds.config.fields import settings_of
from sbi_rounds.config.sources import env_name, env_settings, resolve

SETTINGS = list(settings_of(RunConfig))


def _text(setting):
    """What a user writes in the setting's environment variable."""
    kind = setting.kind()
    if setting.path == ("simulator", "command"):
        return "prog {input} '{output} x'"
    if kind.mapping:
        return "{noise: 0.1}"
    if kind.scalar is bool and not kind.is_list and not kind.choices:
        return "true"
    if kind.choices:
        return str(kind.choices[-1])
    value = {int: "3", float: "0.5", str: "text"}[kind.scalar]
    return f"{value} {value}" if kind.is_list else value


def _at(data, path):
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.dotted for s in SETTINGS])
def test_every_setting_has_an_environment_variable(setting):
    value = _at(env_settings({env_name(setting): _text(setting)}), setting.path)
    kind = setting.kind()
    if setting.path == ("simulator", "command"):
        assert value == ["prog", "{input}", "{output} x"]  # split like a shell line
    elif kind.mapping:
        assert value == {"noise": 0.1}
    elif kind.is_list and not kind.choices:
        assert isinstance(value, list) and len(value) == 2, value  # words, not JSON
    if kind.optional:
        assert _at(env_settings({env_name(setting): "none"}), setting.path) is None


def test_variables_that_name_no_setting_are_left_alone_and_misspellings_are_named():
    environ = {"SBI_ROUNDS_XOBS": "0.5 -0.3", "SBI_ROUNDS_INPUT": "an external simulator's"}
    assert resolve({}, environ).xobs == [0.5, -0.3]
    with pytest.raises(ValidationError) as info:
        resolve({}, {**environ, "SBI_ROUNDS_TRAINING__BACH_SIZE": "100"})
    assert "training.bach_size: unknown setting" in format_validation_error(info.value)
    with pytest.raises(ValidationError) as info:
        resolve({}, {**environ, "SBI_ROUNDS_TRAINING__BATCH_SIZE": "many"})
    assert "training.batch_size" in format_validation_error(info.value)


def test_a_section_as_yaml_any_case_and_a_mapping_key_by_key():
    config = resolve(
        {},
        {
            "sbi_rounds_xobs": "[1.5]",
            "SBI_ROUNDS_TRAINING": "{max_epochs: 4, batch_size: 10}",
            "SBI_ROUNDS_TRAINING__BATCH_SIZE": "20",  # the variable of a setting wins
            "SBI_ROUNDS_SIMULATOR__KWARGS__NOISE": "0.2",
        },
    )
    assert config.xobs == [1.5] and config.training.max_epochs == 4
    assert config.training.batch_size == 20 and config.simulator.kwargs == {"noise": 0.2}


def test_the_implied_settings_come_with_the_source_that_gives_them(tmp_path):
    (tmp_path / "c.toml").write_text(
        'xobs = [1.0]\n[cluster]\nkind = "local"\n[prior]\nlow = [0.0]\nhigh = [1.0]\n'
    )
    config = resolve(
        {"simulator": {"command": ["prog"]}},
        {"SBI_ROUNDS_CLUSTER__SCHEDULER_FILE": "s.json", "SBI_ROUNDS_PRIOR__PATH": "a:b"},
        tmp_path / "c.toml",
    )
    assert config.simulator.kind == "command" and config.simulator.path is None
    assert config.cluster.kind == "scheduler_file"  # over the file's local
    assert config.prior.path == "a:b" and config.prior.low is None  # the file's box replaced


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.yaml", "- 1\n- 2\n", "must hold a mapping of settings at the top"),
        ("c.toml", "xobs = [1\n", "is not valid TOML"),
        ("c.yaml", "xobs: [1\n", "is not valid YAML"),
        ("c.json", "{}", "must end in .yaml, .yml or .toml"),
    ],
)
def test_a_config_file_that_cannot_be_read_is_one_line_naming_it(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_config_file(tmp_path / name)
    assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="does not exist"):
        resolve({}, {"SBI_ROUNDS_CONFIG": str(tmp_path / "missing.yaml")})


def test_campaign_settings_come_from_flags_environment_and_file(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "rounds: 2\ncampaign: {observations: obs.csv, max_concurrent: 3, directory: d1}\n"
    )
    args = campaign_parser().parse_args(["--config", str(tmp_path / "c.yaml"), "--rounds", "4"])
    environ = {"SBI_ROUNDS_CAMPAIGN__MAX_CONCURRENT": "5", "SBI_ROUNDS_SEED": "7"}
    campaign, shared = build_settings(args, environ)
    assert campaign.observations == "obs.csv" and campaign.max_concurrent == 5
    assert campaign.directory == "d1"
    assert shared == {"rounds": 4, "seed": "7"}
    with pytest.raises(ValueError, match="xobs given by the environment"):
        build_settings(args, {"SBI_ROUNDS_XOBS": "1"})
