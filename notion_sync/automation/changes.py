"""Polling for changes: the path of realtime objects without change events (:mod:`.realtime`).

A poll lists the records changed since the newest change seen minus the object's
`lookback_seconds` (``SELECT Id, SystemModstamp ... WHERE SystemModstamp > <newest - lookback> ORDER
BY SystemModstamp DESC LIMIT 2000`` through queryAll, so deletions count) and launches the daily
partitions touched by the pairs (Id, SystemModstamp) not seen yet. Up to five objects are polled in
one Composite API call (``POST /composite``: the whole series counts as one call toward the daily
API limit; at most five of its subrequests may be queries), so polling ten objects every 15 s costs
two calls, not ten.

The lookback is for late commits: a long transaction commits with a SystemModstamp earlier than
records already read. :class:`ChangeCursor` keeps the newest modstamp and every pair seen within the
lookback window, so a change read again is not launched again, and a late one is launched once. An
object's first poll only records the current window (history is the backfills' job).

At most ``WINDOW_LIMIT`` pairs are listed per poll (one REST page). When more changed within the
window, the unlisted older ones are covered only if they are newer than the previous cursor (their
days are launched from the cursor's day on); a late commit behind 2,000 newer changes within the
lookback is left to the next backfill or reconcile of its day.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from simple_salesforce import Salesforce

from notion_sync.automation.modstamps import format_modstamp, modstamp_day, parse_modstamp, touched_days
from notion_sync.salesforce.extract import DeletedWindow, deleted_span, deleted_window
from notion_sync.salesforce.soql import soql_datetime

MODSTAMP = "SystemModstamp"
clock = time.time  # when getDeleted is asked up to; tests may replace it
WINDOW_LIMIT = 2_000  # one REST page of (Id, SystemModstamp) pairs


@dataclass
class ChangeCursor:
    """The newest modstamp seen and the pairs seen within the lookback window (Id -> modstamp).

    `seen` None: a cursor written before the lookback existed (a bare modstamp), for which every
    record up to `newest` counts as seen.
    """

    newest: str
    seen: dict[str, str] | None = field(default_factory=dict)
    deletes_covered: str | None = None  # getDeleted's latestDateCovered of the last call

    @classmethod
    def parse(cls, text: str) -> ChangeCursor:
        if not text.startswith("{"):
            return cls(newest=text, seen=None)
        data = json.loads(text)
        return cls(newest=data["newest"], seen=data["seen"], deletes_covered=data.get("deletes_covered"))

    def dump(self) -> str:
        data = {"newest": self.newest, "seen": self.seen, "deletes_covered": self.deletes_covered}
        return json.dumps(data, sort_keys=True)

    def is_new(self, record_id: str, stamp: str) -> bool:
        if self.seen is None:
            return stamp > self.newest
        return self.seen.get(record_id) != stamp


def window_query(object_name: str, floor: datetime | None) -> str:
    where = f" WHERE {MODSTAMP} > {soql_datetime(floor)}" if floor else ""
    return (
        f"SELECT Id, {MODSTAMP} FROM {object_name}{where} "
        f"ORDER BY {MODSTAMP} DESC, Id DESC LIMIT {WINDOW_LIMIT}"
    )


def window_floor(newest: str, lookback_seconds: int) -> datetime:
    """Start of the lookback window, in whole seconds as a SOQL literal can say it."""
    return (parse_modstamp(newest) - timedelta(seconds=lookback_seconds)).replace(microsecond=0)


def list_window(sf: Salesforce, object_name: str, floor: datetime | None) -> list[tuple[str, str]]:
    """(Id, modstamp) of the records changed after `floor`, newest first, deleted ones included."""
    records = sf.query(window_query(object_name, floor), include_deleted=True)["records"]
    return [(record["Id"], record[MODSTAMP]) for record in records]


def next_cursor(
    previous: ChangeCursor | None, listed: list[tuple[str, str]], lookback: int, deletes_covered: str | None
) -> ChangeCursor:
    """The newest modstamp and the pairs within its lookback window, at most WINDOW_LIMIT of them."""
    newest = max([stamp for _, stamp in listed] + ([previous.newest] if previous else []))
    floor = format_modstamp(window_floor(newest, lookback))
    seen = dict(previous.seen or {}) if previous else {}
    seen.update(listed)
    kept = sorted(((stamp, record_id) for record_id, stamp in seen.items() if stamp > floor), reverse=True)
    kept = kept[:WINDOW_LIMIT]
    seen = {record_id: stamp for stamp, record_id in kept}
    return ChangeCursor(newest=newest, seen=seen, deletes_covered=deletes_covered)


def changed_days(
    previous: ChangeCursor, window: list[tuple[str, str]], deletes: list[tuple[str, str]]
) -> tuple[list[str], str]:
    """The days touched by unseen pairs, and a digest of those pairs (for the run keys)."""
    unseen = sorted(
        (stamp, record_id) for record_id, stamp in window + deletes if previous.is_new(record_id, stamp)
    )
    days = {modstamp_day(stamp).isoformat() for stamp, _ in unseen}
    oldest_listed = window[-1][1] if window else previous.newest
    if len(window) >= WINDOW_LIMIT and oldest_listed > previous.newest:
        days.update(touched_days(previous.newest, oldest_listed))  # unlisted changes since the cursor
    digest = hashlib.sha1(repr(unseen).encode()).hexdigest()[:12]
    return sorted(days), digest


COMPOSITE_QUERIES = 5  # queries allowed in one Composite API request


class CompositeError(RuntimeError):
    """A subrequest of a Composite call failed (its status, errorCode and message)."""


@dataclass(frozen=True)
class Poll:
    """What one object's poll asks: the window query's floor, and getDeleted's span when due."""

    floor: datetime | None
    deleted: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class PollAnswer:
    window: list[tuple[str, str]]
    deletes: DeletedWindow | None


def deletes_due(previous: ChangeCursor, floor: datetime) -> tuple[datetime, datetime] | None:
    """getDeleted's span for the next poll, or None when it is not due.

    Hard deletes and Recycle Bin purges never show in queryAll. getDeleted counts whole minutes,
    so it is asked at most once a minute; each call starts a minute before the last one's
    latestDateCovered (Salesforce wants more than a minute), the overlap being deduplicated by
    the seen pairs like any change read again.
    """
    now = datetime.fromtimestamp(clock(), UTC)
    covered = parse_modstamp(previous.deletes_covered) if previous.deletes_covered else None
    if covered is not None and now - covered < timedelta(minutes=1):
        return None
    return deleted_span(covered - timedelta(minutes=1) if covered else floor, now, now)


def composite_poll(sf: Salesforce, polls: dict[str, Poll]) -> dict[str, PollAnswer | CompositeError]:
    """The polls of up to five objects (window queries, and getDeleted where due) in one
    ``POST /composite``, which counts as one API call. A failed subrequest fails its object only."""
    if len(polls) > COMPOSITE_QUERIES:
        raise ValueError(f"one Composite call holds at most {COMPOSITE_QUERIES} queries")
    base = f"/services/data/v{sf.sf_version}"
    subrequests = []
    for name, poll in polls.items():
        query = quote(window_query(name, poll.floor))
        subrequests.append({"method": "GET", "url": f"{base}/queryAll/?q={query}", "referenceId": name})
        if poll.deleted:
            start, end = (quote(moment.isoformat(timespec="seconds")) for moment in poll.deleted)
            url = f"{base}/sobjects/{name}/deleted/?start={start}&end={end}"
            subrequests.append({"method": "GET", "url": url, "referenceId": f"{name}_deleted"})
    body = {"allOrNone": False, "compositeRequest": subrequests}
    answers = {
        a["referenceId"]: a for a in sf.restful("composite", method="POST", json=body)["compositeResponse"]
    }
    out: dict[str, PollAnswer | CompositeError] = {}
    for name in polls:
        failed = [
            a for a in (answers[name], answers.get(f"{name}_deleted")) if a and a["httpStatusCode"] != 200
        ]
        if failed:
            error = failed[0]["body"][0] if isinstance(failed[0]["body"], list) else {}
            out[name] = CompositeError(
                f"{failed[0]['httpStatusCode']} {error.get('errorCode')}: {error.get('message')}"
            )
            continue
        window = [(record["Id"], record[MODSTAMP]) for record in answers[name]["body"]["records"]]
        deleted = answers.get(f"{name}_deleted")
        out[name] = PollAnswer(window, deleted_window(deleted["body"]) if deleted else None)
    return out
