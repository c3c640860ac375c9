"""The project's Definitions load from the example config with the contract's asset keys."""

from dagster import AssetKey, DailyPartitionsDefinition

from notion_sync.config import load_config
from notion_sync.definitions import build_definitions, defs


def test_defs_load_and_resolve():
    repo = defs.get_repository_def()
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    for obj in ("Account", "Contact", "Opportunity"):
        assert f"salesforce/{obj}" in keys and f"notion/{obj}" in keys


def test_assets_are_daily_partitioned_and_notion_follows_parents():
    graph = defs.get_repository_def().asset_graph
    contact = graph.get(AssetKey(["notion", "Contact"]))
    assert isinstance(contact.partitions_def, DailyPartitionsDefinition)
    assert contact.partitions_def.start.strftime("%Y-%m-%d") == "2026-10-01"
    assert AssetKey(["notion", "Account"]) in contact.parent_keys
    assert AssetKey(["salesforce", "Contact"]) in contact.parent_keys
    assert graph.get(AssetKey(["salesforce", "Contact"])).partitions_def == contact.partitions_def
    assert list(contact.owners) == ["team:revops"]


def test_one_factory_call_per_configured_object(tmp_path):
    config = load_config()
    only_accounts = config.model_copy(update={"objects": {"Account": config.objects["Account"]}})
    keys = {
        key.to_user_string()
        for key in build_definitions(only_accounts).get_repository_def().asset_graph.get_all_asset_keys()
    }
    assert keys == {"salesforce/Account", "notion/Account"}
