"""The sync config fails at load, naming the key, for every kind of mistake a user makes."""

from pathlib import Path

import pytest
import yaml

from notion_sync.config import ALERT_WEBHOOK_ENV, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[1] / "notion_sync.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_loads_with_defaults_applied():
    config = load_config(EXAMPLE)
    assert set(config.objects) == {"Account", "Contact", "Opportunity"}
    contact = config.objects["Contact"]
    assert contact.name == "Contact"
    assert contact.batch_size == 200 and contact.bulk_threshold == 10_000
    assert contact.start_date.isoformat() == "2026-10-01"
    assert contact.property_names()["AccountId"] == "Account"
    assert next(iter(contact.property_names())) == "Name"
    assert config.parents_of("Contact") == ["Account"]
    assert contact.staging_table == "stg_contact"


def assert_config_error(data: dict, *fragments: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "test.yaml")
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_key_is_named():
    data = example()
    data["objects"]["Account"]["feilds"] = {"Name": "Name"}
    assert_config_error(data, "objects.Account.feilds", "unknown key")


def test_unknown_top_level_key_is_named():
    data = example()
    data["object"] = {}
    assert_config_error(data, "object:", "unknown key")


def test_bad_cron_is_named():
    data = example()
    data["objects"]["Opportunity"]["schedule"]["cron"] = "every hour"
    assert_config_error(data, "objects.Opportunity.schedule.cron", "'every hour' is not a valid cron")


def test_relation_to_unconfigured_object_is_named():
    data = example()
    del data["objects"]["Account"]
    assert_config_error(data, "objects.Contact.relations.AccountId", "'Account' is not a configured object")


def test_relation_cycle_is_reported():
    data = example()
    data["objects"]["Account"]["relations"] = {"Primary_Contact__c": "Contact"}
    assert_config_error(data, "cycle", "Account -> Contact -> Account")


def test_self_relation_is_allowed_and_not_a_dependency():
    data = example()
    data["objects"]["Account"]["relations"] = {"ParentId": "Account"}
    config = parse_config(data)
    assert config.parents_of("Account") == []


def test_missing_title_field_is_named():
    data = example()
    del data["objects"]["Contact"]["title_field"]
    assert_config_error(data, "objects.Contact.title_field", "required key is missing")


def test_missing_start_date_without_defaults():
    data = example()
    del data["defaults"]
    assert_config_error(data, "objects.Account.start_date", "required")


def test_reserved_property_name_is_rejected():
    data = example()
    data["objects"]["Account"]["fields"]["Id"] = "Salesforce Id"
    assert_config_error(data, "objects.Account", "'Salesforce Id' is reserved")


def test_two_fields_on_one_property_are_rejected():
    data = example()
    data["objects"]["Account"]["fields"]["Industry"] = "Type"
    assert_config_error(data, "objects.Account", "both map to Notion property 'Type'")


def test_scheduled_mode_needs_a_schedule():
    data = example()
    del data["objects"]["Opportunity"]["schedule"]
    assert_config_error(data, "objects.Opportunity", "mode 'scheduled' needs an enabled schedule")


def test_bad_values_are_named():
    data = example()
    data["objects"]["Account"]["batch_size"] = 0
    data["objects"]["Account"]["mode"] = "sometimes"
    data["objects"]["Account"]["fields"]["Bad Field"] = "X"
    data["objects"]["Account"]["history_days"] = 0
    data["objects"]["Account"]["lookback_seconds"] = -1
    assert_config_error(
        data,
        "objects.Account.batch_size",
        "objects.Account.mode",
        "'Bad Field' is not a Salesforce field",
        "objects.Account.history_days",
        "objects.Account.lookback_seconds",
    )


def test_lookback_defaults_to_airbytes_600_seconds_and_is_set_per_object():
    data = example()
    data["objects"]["Contact"]["lookback_seconds"] = 120
    config = parse_config(data)
    assert config.objects["Account"].lookback_seconds == 600
    assert config.objects["Contact"].lookback_seconds == 120


def test_empty_objects_rejected():
    assert_config_error({"objects": {}}, "at least one Salesforce object")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="NOTION_SYNC_CONFIG"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("objects: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_env_variable_selects_the_file(tmp_path, monkeypatch):
    data = example()
    del data["objects"]["Opportunity"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("NOTION_SYNC_CONFIG", str(path))
    assert set(load_config().objects) == {"Account", "Contact"}


def test_automation_sections_default_and_override():
    config = load_config(EXAMPLE)
    assert config.retry.backoff_minutes == [1, 2, 4] and config.retry.max_attempts == 3
    assert config.retry.min_after_rate_limit_minutes == 5
    assert config.realtime.interval_seconds == 15
    assert config.reconcile.schedule.cron == "0 3 * * 0"
    assert config.alerts.rate_limited_runs == 3 and config.alerts.rate_limited_calls == 100
    data = example()
    data["retry"] = {"backoff_minutes": [0.05, 0.1], "min_after_rate_limit_minutes": 0.1, "max_attempts": 2}
    data["alerts"] = {"webhook_url": "http://127.0.0.1:9/hook", "failure_rate": 0.05, "rate_limited_runs": 5}
    config = parse_config(data)
    assert config.retry.backoff_minutes == [0.05, 0.1] and config.alerts.rate_limited_runs == 5


def test_unknown_retry_key_is_named():
    data = example()
    data["retry"] = {"backof_minutes": [1]}
    assert_config_error(data, "retry.backof_minutes", "unknown key")


def test_bad_retry_values_are_named():
    data = example()
    data["retry"] = {"backoff_minutes": [], "max_attempts": -1}
    assert_config_error(data, "retry.backoff_minutes", "at least one delay", "retry.max_attempts")


def test_bad_reconcile_cron_is_named():
    data = example()
    data["reconcile"] = {"schedule": {"cron": "weekly"}}
    assert_config_error(data, "reconcile.schedule.cron", "not a valid cron")


def test_owners_must_be_emails_or_teams():
    data = example()
    data["objects"]["Account"]["owners"] = ["revops"]
    assert_config_error(data, "objects.Account.owners", "'revops' must be an email address or 'team:<name>'")
    data["objects"]["Account"]["owners"] = ["ops@example.com", "team:revops"]
    assert parse_config(data).objects["Account"].owners == ("ops@example.com", "team:revops")


def test_alert_webhook_must_be_an_http_url():
    data = example()
    data["alerts"] = {"webhook_url": "hooks.slack.com/services/T0/B0/x"}
    assert_config_error(data, "alerts.webhook_url", "must be a full http:// or https:// URL")


def test_alert_webhook_from_the_environment_overrides_the_file(tmp_path, monkeypatch):
    data = example()
    data["alerts"] = {"webhook_url": "https://example.com/from-file"}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).alerts.webhook_url == "https://example.com/from-file"
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, "https://hooks.example.com/services/SECRET")
    assert load_config(path).alerts.webhook_url == "https://hooks.example.com/services/SECRET"
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, "hooks.example.com/services/SECRET")
    with pytest.raises(ConfigError, match=ALERT_WEBHOOK_ENV) as error:
        load_config(path)
    assert "SECRET" not in str(error.value)


def test_formula_refresh_is_a_schedule_per_object():
    data = example()
    data["objects"]["Contact"]["formula_refresh"] = {"cron": "0 4 * * *"}
    assert parse_config(data).objects["Contact"].formula_refresh.cron == "0 4 * * *"
    data["objects"]["Contact"]["formula_refresh"] = {"cron": "daily"}
    assert_config_error(data, "objects.Contact.formula_refresh.cron", "not a valid cron string")
