"""`NotionClient`: one `requests.Session`, a shared rate limiter, retries that know what is safe to retry.

Every HTTP attempt first acquires the limiter, is logged (method, endpoint, status, duration; never
the token) and is reported to ``on_call`` as an `ApiCall`. Transient failures are retried with
exponential backoff and full jitter, honouring Retry-After (which pauses every worker sharing the
limiter, minutes long for a workspace limit). Permanent failures raise at once; those no request can
get past (401, 403, a blocked connection) raise `RunStoppingError` naming what to fix. A create
(``idempotent=False``) whose outcome is unknown raises `AmbiguousWriteError` instead of being
retried: Notion has no idempotency keys, so only the caller, by looking the record up, can tell
whether it exists. A 409 wrote nothing and is retried like a 429; a 503 saying the write was saved
(``committed_resource_id`` / ``retry_guidance``) raises `CommittedWriteError` and is never repeated.

Bodies are sent as UTF-8 JSON: ``requests``' ``json=`` escapes every non-ASCII character as
``\\uXXXX`` (six bytes for a Cyrillic or CJK character), which would put long text over Notion's
500 KB body limit.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from notion_sync.notion.errors import (
    BLOCKED,
    NOT_APPLIED_STATUSES,
    RATE_LIMIT_REASONS,
    AmbiguousWriteError,
    CommittedWriteError,
    NotionApiError,
    PermanentNotionError,
    RunStoppingError,
    TransientNotionError,
    error_class,
    explain,
)
from notion_sync.notion.rate_limit import RateLimiter

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.notion.com"
DEFAULT_VERSION = "2025-09-03"
# Notion answers 503 after 60 s of work; a client giving up sooner turns slow successes into retries.
READ_TIMEOUT_S = 60.0
_ID = re.compile(
    r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}(?![0-9A-Za-z])"
)
_PROPERTY_ITEM = re.compile(r"(/properties/)[^/]+")
CREATED_ASCENDING = [{"timestamp": "created_time", "direction": "ascending"}]


class IncompleteResultsError(RuntimeError):
    """Notion cut a result list (``request_status`` incomplete): what was read is not all there is."""


@dataclass
class _Cut:
    """Set by `NotionClient._results` when Notion said the results it gave were cut short."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One HTTP attempt, as recorded in ``api_usage``."""

    at: datetime  # when the attempt was sent (UTC)
    method: str
    endpoint: str  # path with ids replaced by {id}, e.g. /v1/pages/{id}
    status: int  # HTTP status; 0 when no response arrived (timeout, connection error)
    duration_ms: float
    rate_limited: bool  # 429
    retry_after: float | None  # Retry-After in (virtual) seconds, as the server sent it
    error_code: str | None  # Notion's error code, or "timeout" / "connection_error"
    rate_limit_reason: str | None = None  # a 429's additional_data.rate_limit_reason


def endpoint_of(path: str) -> str:
    """`/v1/pages/59833787-2cf9-…/properties/title` → `/v1/pages/{id}/properties/{id}`."""
    path = path.split("?", 1)[0]
    return _PROPERTY_ITEM.sub(r"\1{id}", _ID.sub("{id}", path))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: Notion sends an integer; an HTTP date is accepted too."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class NotionClient:
    """Notion REST client for the data-source API (``Notion-Version`` 2025-09-03 by default).

    Thread-safe: one instance serves a pool of workers (see `pipeline.run_pipelined`); size the
    connection pool with ``pool_size`` ≥ the number of workers. ``priority=True``: its requests go
    ahead of every other client's waiting in the shared limiter (the total rate is unchanged).
    """

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        version: str = DEFAULT_VERSION,
        limiter: RateLimiter | None = None,
        timeout: tuple[float, float] = (5.0, READ_TIMEOUT_S),
        time_scale: float = 1.0,
        max_retries: int = 6,
        on_call: Callable[[ApiCall], None] | None = None,
        *,
        pool_size: int = 16,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        priority: bool = False,
    ) -> None:
        if not token:
            raise ValueError("a Notion token is required (NOTION_TOKEN)")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.limiter = limiter
        self.timeout = timeout
        self.time_scale = float(time_scale)
        self.max_retries = max_retries
        self.on_call = on_call
        self.backoff_base = backoff_base  # virtual seconds, like backoff_max
        self.backoff_max = backoff_max
        # Every attempt (retries too) takes a priority ticket: ahead of the normal requests waiting
        # for the shared limiter (the realtime lane's runs, see `RateLimiter.acquire`).
        self.priority = priority
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Notion-Version": version,
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )

    def __repr__(self) -> str:
        return f"NotionClient(base_url={self.base_url!r}, version={self.version!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> NotionClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- core ------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
    ) -> dict:
        """Send one API request with rate limiting and retries; return the decoded JSON body.

        Raises `PermanentNotionError` at once (`RunStoppingError` when no request can succeed),
        `TransientNotionError` after ``max_retries`` retries, `AmbiguousWriteError` at once when
        ``idempotent=False`` and the request may have been applied (timeout, 5xx or connection lost
        after sending), and `CommittedWriteError` at once for any write Notion says it saved.
        """
        method = method.upper()
        if not path.startswith("/"):
            path = "/" + path
        url = self.base_url + path
        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire(priority=self.priority)
            try:
                return self._attempt(method, path, url, json, params, idempotent)
            except AmbiguousWriteError:  # CommittedWriteError too: never repeated
                raise
            except TransientNotionError as error:
                if attempt >= self.max_retries:
                    log.warning(
                        "Notion %s %s failed after %d retries: %s",
                        method,
                        endpoint_of(path),
                        attempt,
                        self._redact(str(error)),
                    )
                    raise
                attempt += 1
                self._wait_before_retry(error, attempt)

    def _attempt(self, method: str, path: str, url: str, json: Any, params: Any, idempotent: bool) -> dict:
        endpoint = endpoint_of(path)
        at = datetime.now(UTC)
        started = time.perf_counter()
        data = (
            None if json is None else jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":")).encode()
        )
        try:
            response = self.session.request(method, url, data=data, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            duration_ms = (time.perf_counter() - started) * 1000
            sent = not isinstance(exc, requests.ConnectTimeout) and not _never_connected(exc)
            code = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            self._record(at, method, endpoint, 0, duration_ms, None, code)
            cls = AmbiguousWriteError if (sent and not idempotent) else TransientNotionError
            raise cls(
                0, code, self._redact(f"{type(exc).__name__}: {exc}"), method=method, path=endpoint
            ) from None
        duration_ms = (time.perf_counter() - started) * 1000
        status = response.status_code
        if 200 <= status < 300:
            self._record(at, method, endpoint, status, duration_ms, None, None)
            if self.limiter is not None:
                self.limiter.on_success()
            if not response.content:
                return {}
            try:
                return response.json()
            except ValueError:
                raise TransientNotionError(
                    status, "invalid_response", "response body is not JSON", method=method, path=endpoint
                ) from None
        error = self._error_from(response, method, endpoint)
        self._record(
            at, method, endpoint, status, duration_ms, error.retry_after, error.code, error.rate_limit_reason
        )
        write = method in ("PATCH", "DELETE") or not idempotent
        if status == 503 and write and error.do_not_repeat:
            raise error.recast(CommittedWriteError)
        if isinstance(error, TransientNotionError) and not idempotent and status not in NOT_APPLIED_STATUSES:
            raise error.recast(AmbiguousWriteError)
        raise error

    def _error_from(self, response: requests.Response, method: str, endpoint: str) -> NotionApiError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        code = str(body.get("code") or f"http_{status}")
        extra = body.get("additional_data") if isinstance(body.get("additional_data"), dict) else {}
        said = str(body.get("message") or response.reason or "")
        message = self._redact(explain(status, said, extra))
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        cls = RunStoppingError if extra.get("rate_limit_reason") == BLOCKED else error_class(status)
        return cls(
            status,
            code,
            message[:2000],
            request_id=body.get("request_id"),
            retry_after=retry_after,
            method=method,
            path=endpoint,
            additional_data=extra,
        )

    def _wait_before_retry(self, error: TransientNotionError, attempt: int) -> None:
        ts = self.time_scale
        if error.retry_after is not None:
            real = error.retry_after / ts
            if self.limiter is not None:
                # Every worker of every process waits; our own next acquire() waits with them.
                self.limiter.pause(
                    real, f"{error.status} {error.code} on {error.method} {error.path}{limit_hit(error)}"
                )
                if error.status in (429, 529):
                    self.limiter.on_throttled()
            else:
                time.sleep(real)
            log.info(
                "Notion %s, retry %d/%d after %.2fs (Retry-After)",
                error.code,
                attempt,
                self.max_retries,
                error.retry_after,
            )
            return
        if error.status == 429 and self.limiter is not None:
            self.limiter.on_throttled()
        # Exponential backoff with full jitter, in virtual seconds, slept scaled.
        delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
        log.info(
            "Notion %s %s, retry %d/%d in %.2fs",
            error.status or "",
            error.code,
            attempt,
            self.max_retries,
            delay,
        )
        time.sleep(delay / ts)

    def _record(
        self, at, method, endpoint, status, duration_ms, retry_after, error_code, reason=None
    ) -> None:
        level = logging.DEBUG if 200 <= status < 300 else logging.INFO
        log.log(level, "Notion %s %s -> %s in %.0fms", method, endpoint, status or error_code, duration_ms)
        if self.on_call is not None:
            call = ApiCall(
                at,
                method,
                endpoint,
                status,
                round(duration_ms, 2),
                status == 429,
                retry_after,
                error_code,
                reason,
            )
            try:
                self.on_call(call)
            except Exception:  # recording usage must never break a sync
                log.exception("on_call hook failed")

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    # -- endpoints -------------------------------------------------------------------------------
    def create_database(
        self, parent_page_id: str, title: str, properties: dict[str, Any], description: str | None = None
    ) -> dict:
        """Create a database (with its first data source) under a page. Not retried when ambiguous:
        an `AmbiguousWriteError` means look for the database (`search_data_sources`) before creating
        it again."""
        body: dict[str, Any] = {
            "parent": {"type": "page_id", "page_id": parent_page_id},
            "title": [{"type": "text", "text": {"content": title}}],
            "initial_data_source": {"properties": properties},
        }
        if description is not None:
            body["description"] = [{"type": "text", "text": {"content": description}}]
        return self.request("POST", "/v1/databases", json=body, idempotent=False)

    def search_data_sources(self, query: str, page_size: int = 100) -> Iterator[dict]:
        """Every data source shared with the integration whose title contains ``query``, following
        ``next_cursor``. Notion indexes for search asynchronously and search is not guaranteed
        complete: a just-created data source may be missing for a while (`block_children` is not)."""
        body: dict[str, Any] = {
            "query": query,
            "filter": {"property": "object", "value": "data_source"},
            "page_size": max(1, min(100, page_size)),
        }
        return self._paginate("POST", "/v1/search", body)

    def block_children(self, block_id: str, page_size: int = 100) -> Iterator[dict]:
        """The child blocks of a page (``child_database`` and ``child_page`` among them), following
        ``next_cursor``; consistent at once, unlike search."""
        params = {"page_size": max(1, min(100, page_size))}
        return self._paginate("GET", f"/v1/blocks/{block_id}/children", params=params)

    def retrieve_database(self, database_id: str) -> dict:
        return self.request("GET", f"/v1/databases/{database_id}")

    def retrieve_data_source(self, data_source_id: str) -> dict:
        return self.request("GET", f"/v1/data_sources/{data_source_id}")

    def update_data_source(self, data_source_id: str, properties: dict[str, Any]) -> dict:
        """Add, change (``{"name": …}`` renames) or delete (``None``) properties of the schema."""
        return self.request("PATCH", f"/v1/data_sources/{data_source_id}", json={"properties": properties})

    def query_data_source(
        self,
        data_source_id: str,
        filter: dict | None = None,
        sorts: list[dict] | None = None,
        page_size: int = 100,
        filter_properties: list[str] | None = None,
    ) -> Iterator[dict]:
        """The pages of one query, following ``next_cursor`` (one request per `page_size` pages).

        Notion returns at most 10,000 results per query: past that this raises
        `IncompleteResultsError` after the last page it got. To read every page, use `all_pages`.
        """
        body = self._query_body(filter, sorts, page_size)
        return self._paginate(
            "POST", f"/v1/data_sources/{data_source_id}/query", body, _fields(filter_properties)
        )

    def all_pages(
        self,
        data_source_id: str,
        filter: dict | None = None,
        page_size: int = 100,
        filter_properties: list[str] | None = None,
    ) -> Iterator[dict]:
        """Every page matching `filter`, whatever their number, by ``created_time`` ascending.

        A query returns at most 10,000 results. When one is cut, the rest is read in ``created_time``
        windows, as the SDK's ``iterateAllDataSourceRows`` does: the query again from the last minute
        read (``on_or_after``; timestamps are kept to the minute, so windows overlap by that minute),
        skipping the pages of that minute already read. Only the ids of one minute are held. When one
        minute alone holds more pages than a query returns, raises `IncompleteResultsError`.
        """
        path = f"/v1/data_sources/{data_source_id}/query"
        since: str | None = None  # the minute the current window starts at
        read: set[str] = set()  # ids of the pages of minute `since` already yielded
        while True:
            window = {"timestamp": "created_time", "created_time": {"on_or_after": since}} if since else None
            conditions = [condition for condition in (filter, window) if condition]
            combined = {"and": conditions} if len(conditions) > 1 else (conditions or [None])[0]
            body = self._query_body(combined, CREATED_ASCENDING, page_size)
            cut, minute, minute_ids = _Cut(), since, read
            for page in self._results("POST", path, body, _fields(filter_properties), cut):
                if page["id"] in read:
                    continue
                if page.get("created_time") != minute:
                    minute, minute_ids = page.get("created_time"), set()
                minute_ids.add(page["id"])
                yield page
            if cut.reason is None:
                return
            if minute == since or minute is None:
                raise IncompleteResultsError(
                    f"data source {data_source_id}: Notion cut the query ({cut.reason}) and the pages "
                    f"created in the minute {minute or since} alone are more than one query returns; "
                    "they cannot all be read through the API"
                )
            log.info("data source %s: query cut (%s), reading on from %s", data_source_id, cut.reason, minute)
            since, read = minute, minute_ids

    @staticmethod
    def _query_body(filter: dict | None, sorts: list[dict] | None, page_size: int) -> dict[str, Any]:
        body: dict[str, Any] = {"page_size": max(1, min(100, page_size))}
        if filter is not None:
            body["filter"] = filter
        if sorts is not None:
            body["sorts"] = sorts
        return body

    def _paginate(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
    ) -> Iterator[dict]:
        """`_results`, raising `IncompleteResultsError` at the end when Notion cut them short."""
        cut = _Cut()
        yield from self._results(method, path, body, params, cut)
        if cut.reason is not None:
            raise IncompleteResultsError(
                f"{method} {endpoint_of(path)}: Notion cut the results ({cut.reason}); "
                "what was read is not all there is"
            )

    def _results(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, Any] | None,
        cut: _Cut,
    ) -> Iterator[dict]:
        """The ``results`` of a paginated request, page after page, following ``next_cursor`` (in the
        body of a POST, the query string of a GET); ``cut.reason`` is set when ``request_status``
        says the results are incomplete."""
        body, params = dict(body or {}), dict(params or {})
        while True:
            if method == "GET":
                result = self.request("GET", path, params=params)
            else:
                result = self.request(method, path, json=body, params=params or None)
            yield from result.get("results", [])
            status = result.get("request_status") or {}
            if status.get("type") == "incomplete":
                cut.reason = str(status.get("incomplete_reason") or "incomplete")
            cursor = result.get("next_cursor")
            if not result.get("has_more") or not cursor:
                return
            (params if method == "GET" else body)["start_cursor"] = cursor

    def create_page(self, data_source_id: str, properties: dict[str, Any]) -> dict:
        """Create a page in a data source. Never retried when the outcome is unknown: on
        `AmbiguousWriteError`, look the record up (`find_pages_by_property`) before creating again."""
        body = {
            "parent": {"type": "data_source_id", "data_source_id": data_source_id},
            "properties": properties,
        }
        return self.request("POST", "/v1/pages", json=body, idempotent=False)

    def update_page(
        self, page_id: str, properties: dict[str, Any] | None = None, in_trash: bool | None = None
    ) -> dict:
        """Update properties and/or move the page to or from the trash (``in_trash``; never ``archived``)."""
        body: dict[str, Any] = {}
        if properties is not None:
            body["properties"] = properties
        if in_trash is not None:
            body["in_trash"] = in_trash
        return self.request("PATCH", f"/v1/pages/{page_id}", json=body)

    def retrieve_page(self, page_id: str) -> dict:
        return self.request("GET", f"/v1/pages/{page_id}")

    def find_pages_by_property(self, data_source_id: str, property_name: str, value: str) -> list[dict]:
        """Pages whose rich_text property equals `value` (e.g. the ``Salesforce Id`` upsert lookup)."""
        flt = {"property": property_name, "rich_text": {"equals": value}}
        return list(self.all_pages(data_source_id, filter=flt))


def _fields(filter_properties: list[str] | None) -> dict[str, Any] | None:
    """The ``filter_properties`` query parameter: only these properties in the pages returned."""
    return {"filter_properties": list(filter_properties)} if filter_properties else None


def plain_text(rich_text: Iterable[dict[str, Any]] | None) -> str:
    """The text of a rich-text array: Notion's ``plain_text``, else the content as written."""
    return "".join(
        part.get("plain_text") or part.get("text", {}).get("content", "") for part in rich_text or ()
    )


# Virtual seconds between further lookups after a create whose outcome is unknown: what it made
# may take a moment to show up in search (documented as eventually consistent) and query results.
SETTLE_S = (1.0, 2.0, 4.0)


def find_settled(client: NotionClient, find: Callable[[], T | None]) -> T | None:
    """``find()`` now and, while it finds nothing, again after each of `SETTLE_S`."""
    for wait in (0.0, *SETTLE_S):
        time.sleep(wait / client.time_scale)
        if found := find():
            return found
    return None


def limit_hit(error: NotionApiError) -> str:
    """ ", <which limit>" for a 429 that says which limit it hit ("" otherwise), for logs."""
    reason = error.rate_limit_reason
    return f": {RATE_LIMIT_REASONS.get(reason, 'a limit')} ({reason})" if reason else ""


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the server (refused / DNS / connect timeout)."""
    import urllib3.exceptions as u3

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (u3.NewConnectionError, u3.ConnectTimeoutError, u3.NameResolutionError)):
            return True
        if isinstance(cur, u3.MaxRetryError) and cur.reason is not None:
            cur = cur.reason
            continue
        nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = nxt or cur.__cause__ or cur.__context__
    return False


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_VERSION",
    "AmbiguousWriteError",
    "ApiCall",
    "IncompleteResultsError",
    "NotionApiError",
    "NotionClient",
    "PermanentNotionError",
    "TransientNotionError",
    "endpoint_of",
    "find_settled",
    "parse_retry_after",
    "plain_text",
]
