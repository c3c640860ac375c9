"""The one partitioning scheme shared by an object's Salesforce and Notion assets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import DailyPartitionsDefinition

from notion_sync.config import ObjectConfig


def daily_partitions(obj: ObjectConfig) -> DailyPartitionsDefinition:
    """Daily UTC partitions on SystemModstamp, from the object's start date."""
    return DailyPartitionsDefinition(start_date=obj.start_date.isoformat(), timezone="UTC", end_offset=1)


def partition_window(partition_key: str) -> tuple[datetime, datetime]:
    """[start, end) of a daily partition key `YYYY-MM-DD`, in UTC."""
    start = datetime.strptime(partition_key, "%Y-%m-%d").replace(tzinfo=UTC)
    return start, start + timedelta(days=1)
