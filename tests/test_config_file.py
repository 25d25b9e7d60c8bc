"""The settings file (issue 16, item 5): precedence flag > environment > file > default, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.cli import main
from orchestration.settings import PROJECT_ROOT, PipelineSettings, SettingsError, example_config


def test_flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults(tmp_path, monkeypatch):
    config = tmp_path / "crm.toml"
    config.write_text('churn_horizon_days = 60\nclv_horizon_days = 200\ntimezone = "Europe/Berlin"\n')
    monkeypatch.delenv("CRM_CLV_HORIZON_DAYS", raising=False)
    s = PipelineSettings.from_env(config=str(config))
    assert (s.churn_horizon_days, s.clv_horizon_days, s.timezone, s.annual_discount_rate) == (60, 200, "Europe/Berlin", 0.1)
    monkeypatch.setenv("CRM_CLV_HORIZON_DAYS", "300")
    assert PipelineSettings.from_env(config=str(config)).clv_horizon_days == 300
    assert PipelineSettings.from_env(config=str(config), clv_horizon_days=100).clv_horizon_days == 100
    monkeypatch.setenv("CRM_CONFIG", str(config))  # the environment may name the file
    assert PipelineSettings.from_env().churn_horizon_days == 60
    monkeypatch.delenv("CRM_CONFIG")
    monkeypatch.chdir(tmp_path)  # and ./crm-potential.toml is read when nothing names one
    (tmp_path / "crm-potential.toml").write_text("churn_horizon_days = 45\n")
    assert PipelineSettings.from_env().churn_horizon_days == 45


@pytest.mark.parametrize("text, message", [
    ("churn_horizon = 60\n", "unknown setting 'churn_horizon'; the settings are action_rules_file, "),
    ('churn_horizon_days = "ninety"\n', "churn_horizon_days must be a whole number, got 'ninety'"),
    ("full_refresh = 1\n", "full_refresh must be true or false, got 1"),
    ('timezone = "Mars/Base"\n', "timezone (CRM_TIMEZONE) must be an IANA time zone name"),
    ("churn_horizon_days = [\n", "cannot be read"),
])
def test_a_bad_file_is_refused_naming_the_key_and_what_it_accepts(tmp_path, text, message, capsys):
    config = tmp_path / "crm.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=None) as refused:
        PipelineSettings.from_env(config=str(config))
    assert message in str(refused.value)
    assert main(["run", "--config", str(config), "--source", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path, capsys):
    assert main(["validate", "--config", str(tmp_path / "nope.toml")]) == 2
    assert f"config file {tmp_path / 'nope.toml'} does not exist (--config)" in capsys.readouterr().err


def test_the_example_file_lists_every_setting_as_the_code_has_it():
    committed = (PROJECT_ROOT / "crm-potential.example.toml").read_text()
    assert committed == example_config() + "\n", "run: .venv/bin/python -c \"from orchestration.settings import " \
        "example_config; open('crm-potential.example.toml','w').write(example_config()+'\\n')\""
    for name in PipelineSettings.model_fields:
        assert f"\n# {name} = " in committed
    import tomllib  # uncommented, the example is a valid file that gives the defaults

    example = tomllib.loads("\n".join(line[2:] for line in committed.splitlines() if " = " in line and line.startswith("# ")))
    assert PipelineSettings(**{k: v for k, v in example.items() if not str(v).startswith(("data/", "models"))})
    assert Path(PROJECT_ROOT / "crm-potential.example.toml").exists()


@pytest.mark.parametrize("env, value, message", [
    ("CRM_PARTITIONS_START", "2024-13-01", "partitions_start (CRM_PARTITIONS_START) must be YYYY-MM-DD, got '2024-13-01'"),
    ("CRM_HISTORY_DAYS", "-1", "history_days (CRM_HISTORY_DAYS) must be 0 or more days, got -1"),
    ("CRM_BLOCK_SOURCE_AGE_DAYS", "-3", "block_source_age_days (CRM_BLOCK_SOURCE_AGE_DAYS) must be 0 or more days"),
    ("CRM_SMTP_SECURITY", "tls", "smtp_security (CRM_SMTP_SECURITY) must be starttls, ssl or none, got 'tls'"),
])
def test_operations_settings_are_checked(env, value, message, monkeypatch):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PipelineSettings.from_env()


def test_secrets_stay_out_of_the_recorded_parameters(monkeypatch):
    monkeypatch.setenv("CRM_ALERT_WEBHOOK", "https://hooks.example.com/services/SECRETTOKEN")
    monkeypatch.setenv("CRM_SMTP_USER", "robot")
    settings = PipelineSettings.from_env()
    assert settings.alert_webhook.endswith("SECRETTOKEN") and settings.smtp_user == "robot"
    recorded = settings.recorded_parameters()
    assert "SECRETTOKEN" not in repr(recorded) and "robot" not in repr(recorded)
    assert "history_days" in recorded and "alert_webhook" not in recorded
