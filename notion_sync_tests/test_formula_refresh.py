"""Formula fields go stale: a cross-object formula changes without its record's SystemModstamp."""

from dagster import (
    Definitions,
    instance_for_test,
)

from notion_sync.automation.formulas import build_formula_check, build_formula_refresh_job
from notion_sync.automation.jobs import sync_job
from notion_sync.automation.names import object_asset_keys
from notion_sync.automation.reconcile import build_reconcile_check
from notion_sync.automation.sensors import build_resync_sensor
from notion_sync.config import load_config
from notion_sync.notion.assets import build_notion_asset
from notion_sync.notion.client import plain_text
from notion_sync.notion.sync import page_salesforce_id
from notion_sync.salesforce.assets import build_salesforce_asset
from notion_sync_tests.run_helpers import requests_after_success
from notion_sync_tests.sandbox_resources import sandbox_resources

CONFIG = load_config()
CONFIG = CONFIG.model_copy(
    update={"objects": {name: CONFIG.objects[name] for name in ("Account", "Contact")}}
)
ACCOUNT, CONTACT = CONFIG.objects["Account"], CONFIG.objects["Contact"]
PARTITION = "2026-11-20"


def test_the_example_config_maps_a_formula_refreshed_with_the_weekly_reconcile():
    assert CONTACT.fields["Account_Name__c"] == "Account Name" and CONTACT.formula_refresh is None


def test_a_stale_cross_object_formula_is_corrected_in_staging_and_notion(
    tmp_path, notion_sandbox, own_salesforce_sandbox
):
    resources = sandbox_resources(own_salesforce_sandbox, notion_sandbox, tmp_path)
    resync = build_resync_sensor(CONFIG)
    defs = Definitions(
        assets=[
            build_salesforce_asset(ACCOUNT),
            build_notion_asset(ACCOUNT, []),
            build_salesforce_asset(CONTACT),
            build_notion_asset(CONTACT, ["Account"]),
        ],
        asset_checks=[build_formula_check(CONTACT)],
        jobs=[sync_job(ACCOUNT), sync_job(CONTACT), build_formula_refresh_job(CONTACT)],
        sensors=[resync],
        resources=resources,
    )
    staging = resources["staging"]
    with instance_for_test() as instance:
        for job in ("sync_Account", "sync_Contact"):
            assert (
                defs.resolve_job_def(job)
                .execute_in_process(instance=instance, partition_key=PARTITION)
                .success
            )
        with staging.connect(read_only=True) as conn:
            staged = conn.execute(
                "SELECT Id, AccountId, Account_Name__c FROM stg_contact "
                "WHERE _partition = ? AND NOT IsDeleted AND AccountId IS NOT NULL ORDER BY Id",
                [PARTITION],
            ).fetchall()
        contact, account, name = next(
            row for row in staged if not own_salesforce_sandbox.get("Account", row[1])["IsDeleted"]
        )
        assert name == own_salesforce_sandbox.get("Account", account)["Name"]

        own_salesforce_sandbox.update("Account", account, {"Name": "Renamed Holdings"})
        # The Contact's SystemModstamp did not move: no sensor and no extraction of another day sees it.
        assert own_salesforce_sandbox.get("Contact", contact)["Account_Name__c"] == "Renamed Holdings"
        with staging.connect(read_only=True) as conn:
            stale = conn.execute("SELECT Account_Name__c FROM stg_contact WHERE Id = ?", [contact]).fetchone()
        assert stale == (name,)

        refreshed = defs.resolve_job_def("refresh_formulas_Contact").execute_in_process(instance=instance)
        assert refreshed.success
        (evaluation,) = refreshed.get_asset_check_evaluations()
        metadata = {key: value.value for key, value in evaluation.metadata.items()}
        assert evaluation.check_name == "formulas_fresh" and evaluation.passed is False
        assert metadata["formula_fields"] == ["Account_Name__c"] and metadata["stale_rows"] >= 1
        assert metadata["notion_resync_partitions"] == [PARTITION]
        with staging.connect(read_only=True) as conn:
            now = conn.execute("SELECT Account_Name__c FROM stg_contact WHERE Id = ?", [contact]).fetchone()
        assert now == ("Renamed Holdings",)

        (request,) = requests_after_success(resync, instance, refreshed)
        notion_contact = object_asset_keys("Contact")[1]
        assert request.partition_key == PARTITION and request.asset_selection == [notion_contact]
        before = own_salesforce_sandbox.stats()["requests"]
        synced = defs.resolve_job_def("sync_Contact").execute_in_process(
            instance=instance,
            partition_key=PARTITION,
            asset_selection=request.asset_selection,
            tags=request.tags,
        )
        assert synced.success
        assert own_salesforce_sandbox.stats()["requests"] == before  # staged already: Notion only
        clean = defs.resolve_job_def("refresh_formulas_Contact").execute_in_process(instance=instance)
        assert clean.get_asset_check_evaluations()[0].passed is True
    (source_id,) = [
        source
        for source in notion_sandbox.stats()["pages_by_data_source"]
        if any(page_salesforce_id(p) == contact for p in notion_sandbox.pages(source))
    ]
    page = next(p for p in notion_sandbox.pages(source_id) if page_salesforce_id(p) == contact)
    assert plain_text(page["properties"]["Account Name"]["rich_text"]) == "Renamed Holdings"


def test_a_check_built_from_another_config_of_the_same_object_is_its_own():
    """The checks are shared within one build (job, schedule and Definitions need the same object),
    never across configs: a Contact mapping other fields gets a check that refreshes those."""
    other = CONTACT.model_copy(update={"fields": {"Name": "Name"}})
    assert build_formula_check(CONTACT) is build_formula_check(CONTACT.model_copy())
    assert build_formula_check(other) is not build_formula_check(CONTACT)
    assert build_reconcile_check(other) is not build_reconcile_check(CONTACT)
