"""Salesforce `SystemModstamp` values (`2026-11-20T13:45:00.000+0000`) and the daily partitions
they fall in (UTC, like the partitions)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def modstamp_day(modstamp: str) -> date:
    """The UTC day of a Salesforce datetime (`2026-11-20T13:45:00.000+0000`)."""
    return datetime.strptime(modstamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).date()


def touched_days(oldest: str, newest: str) -> list[str]:
    """Partition keys from the day of the oldest change to the day of the newest."""
    first, last = modstamp_day(oldest), modstamp_day(newest)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
