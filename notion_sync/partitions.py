"""The one partitioning scheme shared by an object's Salesforce and Notion assets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from dagster import AssetsDefinition, BackfillPolicy, DailyPartitionsDefinition

from notion_sync.config import ObjectConfig


def daily_partitions(obj: ObjectConfig) -> DailyPartitionsDefinition:
    """Daily UTC partitions on SystemModstamp, from the object's start date."""
    return DailyPartitionsDefinition(start_date=obj.start_date.isoformat(), timezone="UTC", end_offset=1)


def in_ranges(assets_def: AssetsDefinition, obj: ObjectConfig) -> AssetsDefinition:
    """`assets_def` backfilled `max_partitions_per_run` consecutive days a run
    (`BackfillPolicy.multi_run`; set here rather than in `@asset`, where the parameter warns as beta)."""
    policy = BackfillPolicy.multi_run(max_partitions_per_run=obj.max_partitions_per_run)
    return assets_def.with_attributes(backfill_policy=policy)


def partition_window(partition_key: str) -> tuple[datetime, datetime]:
    """[start, end) of a daily partition key `YYYY-MM-DD`, in UTC."""
    start = datetime.strptime(partition_key, "%Y-%m-%d").replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


def range_window(partition_keys: Sequence[str]) -> tuple[datetime, datetime]:
    """[start of the first day, end of the last day) of consecutive daily partition keys, in UTC."""
    return partition_window(partition_keys[0])[0], partition_window(partition_keys[-1])[1]
