"""Reading a window through the Composite API (``POST /composite``), which counts as one API call for
up to 25 subrequests, 5 of them query operations (query, queryAll, "query more").

A window is read by a *probe*: the window cut into up to 5 consecutive time slices, one queryAll
subrequest each (their first page), plus getDeleted when it serves the window. The slices'
`totalSize`s add up to the window's exact count, so the probe replaces the COUNT() call; a small
window is read whole by it, the rest of a bigger one by further Composite calls of up to 5 "query
more" subrequests, chained by reference (``@{ref.nextRecordsUrl}``) only as far as the remaining
count guarantees a next page.

A Composite answer holds up to 5 pages of 2,000 records (15 MB of JSON for 65 fields): it is
streamed to a file and cut into one JSON file per subresponse's records by a byte scanner, which
DuckDB then loads into the spool; only the small rest of each subresponse is parsed in Python.
"""

from __future__ import annotations

import json
import mmap
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.util import exception_handler

from notion_sync.salesforce.resource import SalesforceClient
from notion_sync.salesforce.transport import TRANSIENT_STATUSES

QUERY_OPERATIONS = 5  # query operations allowed in one Composite call
MAX_PAGE_RECORDS = 2_000  # Salesforce never returns more records in one query page
DOWNLOAD_CHUNK = 1 << 20
# A JSON string (escapes included) or a bracket: enough to follow the structure of a Composite answer.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPENERS = frozenset(b"[{")
_QUOTE = ord('"')
_ERRORS: dict[int, type[SalesforceError]] = {
    400: SalesforceMalformedRequest,
    403: SalesforceRefusedRequest,
    404: SalesforceResourceNotFound,
}


@dataclass(frozen=True)
class SubResponse:
    """One subresponse: its status, its body without `records` (small), and the file holding the
    JSON array of its records (None when the body has none)."""

    reference: str
    status: int
    body: Any
    records: Path | None

    def raise_for_status(self, object_name: str) -> None:
        """Raise a failed subrequest as simple-salesforce raises the same call made alone."""
        if self.status >= 300:
            error = _ERRORS.get(self.status, SalesforceGeneralError)
            raise error(f"composite:{self.reference}", self.status, object_name, self.body)


def post(
    client: SalesforceClient, subrequests: Sequence[dict[str, Any]], directory: Path
) -> list[SubResponse]:
    """One Composite call (allOrNone false) of GET subrequests; its answer is streamed to a file in
    `directory` and cut into a records file per subresponse there.

    The call goes through the client's session (budget, 401 renewal); since every subrequest only
    reads, a transient failure (a 5xx, a dropped connection, a body cut off) repeats the whole call.
    """
    sf = client.sf
    target = directory / "composite.json"
    headers = {name: value for name, value in sf.headers.items() if name != "X-PrettyPrint"}
    body = {"allOrNone": False, "compositeRequest": list(subrequests)}

    def attempt() -> requests.Response:
        response = sf.session.request(
            "POST", f"{sf.base_url}composite", headers=headers, json=body, stream=True
        )
        if response.status_code < 300:
            with response, target.open("wb") as out:
                for chunk in response.iter_content(DOWNLOAD_CHUNK):
                    out.write(chunk)
        return response

    response = client.backoff.call(attempt, failed=lambda r: r.status_code in TRANSIENT_STATUSES)
    if response.status_code >= 300:
        exception_handler(response, "composite")
    try:
        return split(target, directory)
    finally:
        target.unlink()


def split(path: Path, directory: Path) -> list[SubResponse]:
    """The subresponses of the Composite answer at `path`, each one's `body.records` array copied to
    its own file in `directory` (`<referenceId>.json`) without being parsed."""
    answers = []
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for start, end, records in _subresponses(data):
            if records is None:
                answer = json.loads(data[start:end])
                records_file = None
            else:
                answer = json.loads(data[start : records[0]] + b"[]" + data[records[1] : end])
                records_file = directory / f"{answer['referenceId']}.json"
                records_file.write_bytes(data[records[0] : records[1]])
            body = answer.get("body")
            answers.append(SubResponse(answer["referenceId"], answer["httpStatusCode"], body, records_file))
    return answers


def _subresponses(data: mmap.mmap) -> Iterator[tuple[int, int, tuple[int, int] | None]]:
    """(start, end, records span or None) of each element of `compositeResponse`, by depth:
    1 the answer, 2 the `compositeResponse` array, 3 a subresponse, 4 its body, 5 `body.records`."""
    depth = 0
    start = 0
    records: tuple[int, int] | None = None
    records_start = 0
    key = key_of_body = b""  # the last string seen in the subresponse, and in its body
    body_is_object = False
    for token in _TOKEN.finditer(data):
        first = data[token.start()]
        if first == _QUOTE:
            if depth == 3:
                key = token.group()
            elif depth == 4:
                key_of_body = token.group()
            continue
        if first in _OPENERS:
            depth += 1
            if depth == 3:
                start, records = token.start(), None
            elif depth == 4:
                body_is_object = key == b'"body"' and first == ord("{")
            elif depth == 5 and body_is_object and key_of_body == b'"records"' and first == ord("["):
                records_start = token.start()
        else:
            depth -= 1
            if depth == 4 and records_start:
                records, records_start = (records_start, token.end()), 0
            elif depth == 2:
                yield start, token.end(), records


@dataclass
class Slice:
    """One time slice of a window read by REST: its query, and how far its pages have been read."""

    reference: str
    query: str
    total: int = 0
    read: int = 0
    next_url: str | None = None
    done: bool = False


def query_subrequest(reference: str, url: str, batch_size: int) -> dict[str, Any]:
    return {
        "method": "GET",
        "url": url,
        "referenceId": reference,
        # Salesforce documents that subrequests take the requested resource's headers; the page size
        # is still not guaranteed, and nothing here relies on it.
        "httpHeaders": {"Sforce-Query-Options": f"batchSize={batch_size}"},
    }


def queryall_url(version: str, query: str) -> str:
    return f"/services/data/v{version}/queryAll/?q={quote(query)}"


def deleted_url(version: str, object_name: str, span: tuple[datetime, datetime]) -> str:
    start, end = (quote(moment.isoformat(timespec="seconds")) for moment in span)
    return f"/services/data/v{version}/sobjects/{object_name}/deleted/?start={start}&end={end}"


def more_subrequests(slices: Sequence[Slice], batch_size: int) -> list[dict[str, Any]]:
    """Up to 5 "query more" subrequests for the slices not done: each slice's known next page first,
    then pages chained by reference (``@{ref.nextRecordsUrl}``) where the slice's remaining count
    guarantees one, whatever page size Salesforce picks (at most 2,000 records a page)."""
    pending = [s for s in slices if not s.done]
    chains: dict[str, int] = {s.reference: 1 for s in pending[:QUERY_OPERATIONS]}
    room = QUERY_OPERATIONS - len(chains)
    for s in pending[:QUERY_OPERATIONS]:
        while room and s.total - s.read > chains[s.reference] * MAX_PAGE_RECORDS:
            chains[s.reference] += 1
            room -= 1
    out = []
    for s in pending[:QUERY_OPERATIONS]:
        previous = None
        for step in range(chains[s.reference]):
            reference = f"{s.reference}_{step}"
            url = s.next_url if previous is None else f"@{{{previous}.nextRecordsUrl}}"
            out.append(query_subrequest(reference, str(url), batch_size))
            previous = reference
    return out


def slice_of(reference: str) -> str:
    """The slice a subrequest reads: `s2` for `s2` (a probe page) and for `s2_1` (a next page)."""
    return reference.split("_", 1)[0]


def record_page(s: Slice, answer: SubResponse, rows: int) -> None:
    """Account for a page of slice `s` that brought `rows` records."""
    s.total = answer.body["totalSize"]
    s.read += rows
    s.done = bool(answer.body["done"])
    s.next_url = answer.body.get("nextRecordsUrl")


def halted_after_last_page(answer: SubResponse, s: Slice) -> bool:
    """A chained page whose previous page was the slice's last: its reference had nothing to resolve."""
    codes = {e.get("errorCode") for e in answer.body} if isinstance(answer.body, list) else set()
    return s.done and answer.status == 400 and "PROCESSING_HALTED" in codes
