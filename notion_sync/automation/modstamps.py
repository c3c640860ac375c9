"""Salesforce `SystemModstamp` values (`2026-11-20T13:45:00.000+0000`) and the daily partitions
they fall in (UTC, like the partitions)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def parse_modstamp(modstamp: str) -> datetime:
    """A Salesforce datetime (`2026-11-20T13:45:00.000+0000`, always UTC) as an aware datetime."""
    return datetime.strptime(modstamp[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def format_modstamp(moment: datetime) -> str:
    """The Salesforce form of a UTC datetime, which sorts as text in time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def modstamp_day(modstamp: str) -> date:
    """The UTC day of a Salesforce datetime (`2026-11-20T13:45:00.000+0000`)."""
    return parse_modstamp(modstamp).date()


def touched_days(oldest: str, newest: str) -> list[str]:
    """Partition keys from the day of the oldest change to the day of the newest."""
    first, last = modstamp_day(oldest), modstamp_day(newest)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
