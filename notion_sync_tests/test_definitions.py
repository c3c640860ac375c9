"""The project's Definitions load from the example config with the contract's asset keys."""

import subprocess
import sys

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


def test_loading_the_definitions_leaves_grpc_and_pandas_out():
    """Every run process loads the definitions; gRPC, protobuf and Avro (about 60 MB of RSS) are
    loaded only where a Pub/Sub channel is opened, and pandas (~45 MB, ~0.3 s) not at all."""
    heavy = ("grpc", "google.protobuf", "fastavro", "notion_sync.salesforce.pubsub.client", "pandas")
    code = f"import sys, notion_sync.definitions; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
