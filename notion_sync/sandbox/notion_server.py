"""A local HTTP server that behaves like the Notion API (2025-09-03 / 2026-03-11) for demos and tests.

``NotionSandbox`` runs a ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive) on a daemon thread. The data
model and validation live in ``notion_store``; the token bucket, latency, faults and statistics in
``notion_limits``. Administration (no auth) is under ``/_sandbox/``:

- ``POST /_sandbox/config`` ``{rps, burst, latency_ms, jitter_ms, speed, workspace_rps,
  workspace_retry_after, block_limit, conflict_rate}`` (any subset); ``GET /_sandbox/config``
- ``POST /_sandbox/faults`` ``{status, count, path_prefix, method, apply_write, retry_after, reason,
  committed}`` or ``{"timeout": seconds | null, count, ...}`` or ``{"clear": true}``;
  ``GET /_sandbox/faults``
- ``GET /_sandbox/stats``
- ``POST /_sandbox/seed`` ``{data_source_id, pages: [properties, …], start, per_minute}``: pages made
  without API calls (see `NotionSandbox.seed_pages`); answers ``{"ids": […]}``
- ``POST /_sandbox/search_lag`` ``{seconds}``: virtual seconds before search finds a new data source
- ``POST /_sandbox/reset`` ``{stats: true, faults: true, data: false}``

Speed: at ``speed`` K the server is Notion with time compressed K times: buckets refill at
``rps * K`` tokens per real second (same burst), latency is divided by K, and ``Retry-After`` stays
an integer of *virtual* seconds. Clients divide their waits by ``NOTION_TIME_SCALE`` (= K).
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from notion_sync.sandbox.notion_limits import (
    CONNECTION_LIMIT,
    Fault,
    FaultInjector,
    Latency,
    RateLimiter,
    RequestStats,
    VirtualClock,
    WriteConflicts,
)
from notion_sync.sandbox.notion_store import BOT_USER_ID, V2025, V2026, NotionError, Store, invalid

MAX_BODY_BYTES = 500 * 1000  # Notion: "≤500 KB" per request; bigger bodies get a 413
LEGACY_VERSION = "2022-06-28"
SEED_PER_MINUTE = 180  # pages a minute a sync creates at Notion's 3 requests a second
FAULT_ERRORS: dict[int, tuple[str, str]] = {
    409: ("conflict_error", "Conflict occurred while saving. Please try again."),
    429: ("rate_limited", "You have been rate limited. Please try again in a few minutes."),
    500: ("internal_server_error", "Unexpected error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Notion is unavailable, please try again later."),
    504: ("gateway_timeout", "Notion timed out while processing the request."),
    529: ("service_overload", "Notion is overloaded, please try again later."),
}
_ID = r"(?P<id>[^/]+)"
# (method, path regex, store action, route label used in stats)
ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    (method, re.compile(f"^{pattern}$"), action, f"{method} {label}")
    for method, pattern, action, label in [
        ("POST", "/v1/databases", "create_database", "/v1/databases"),
        ("GET", f"/v1/databases/{_ID}", "get_database", "/v1/databases/{id}"),
        ("PATCH", f"/v1/databases/{_ID}", "update_database", "/v1/databases/{id}"),
        ("POST", "/v1/data_sources", "create_source", "/v1/data_sources"),
        ("GET", f"/v1/data_sources/{_ID}", "get_source", "/v1/data_sources/{id}"),
        ("PATCH", f"/v1/data_sources/{_ID}", "update_source", "/v1/data_sources/{id}"),
        ("POST", f"/v1/data_sources/{_ID}/query", "query", "/v1/data_sources/{id}/query"),
        ("POST", "/v1/pages", "create_page", "/v1/pages"),
        ("GET", f"/v1/pages/{_ID}", "get_page", "/v1/pages/{id}"),
        ("PATCH", f"/v1/pages/{_ID}", "update_page", "/v1/pages/{id}"),
        (
            "GET",
            f"/v1/pages/{_ID}/properties/(?P<prop>[^/]+)",
            "property_items",
            "/v1/pages/{id}/properties/{property_id}",
        ),
        ("DELETE", f"/v1/blocks/{_ID}", "delete_block", "/v1/blocks/{id}"),
        ("GET", f"/v1/blocks/{_ID}/children", "block_children", "/v1/blocks/{id}/children"),
        ("POST", "/v1/search", "search", "/v1/search"),
        ("GET", "/v1/users/me", "me", "/v1/users/me"),
        ("GET", "/v1/users", "users", "/v1/users"),
    ]
]
WRITES = {
    "create_database",
    "update_database",
    "create_source",
    "update_source",
    "create_page",
    "update_page",
    "delete_block",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads must not block stop()
    request_queue_size = 1024
    allow_reuse_address = True
    sandbox: NotionSandbox


class _Reply(Exception):
    """Short-circuits request handling with a ready response."""

    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(err: NotionError, request_id: str) -> _Reply:
    body: dict[str, Any] = {
        "object": "error",
        "status": err.status,
        "code": err.code,
        "message": err.message,
        "request_id": request_id,
    }
    if err.additional_data is not None:
        body["additional_data"] = err.additional_data
    return _Reply(err.status, body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.sandbox._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # the sandbox is quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    # --------------------------------------------------------------------------------- plumbing
    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(payload)}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def _read_body(self, admin: bool = False) -> bytes:
        """The request body; an API body far over Notion's limit is not read (admin ones always are:
        a seed of 25,000 pages is several MB)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > 20 * MAX_BODY_BYTES and not admin:
            self.close_connection = True
            return b"x" * (MAX_BODY_BYTES + 1)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        sandbox = self.server.sandbox
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        raw = self._read_body(admin=path.startswith("/_sandbox/"))
        if path.startswith("/_sandbox/"):
            status, body = sandbox._admin(self.command, path, raw)
            self._send(status, body)
            return
        request_id = str(uuid.uuid4())
        route, action, params = _match(self.command, path)
        fault = None
        try:
            with sandbox._conflicts.writing(sandbox._write_target(action, params, raw)) as conflict:
                sandbox._latency.sleep()  # the write is in flight meanwhile
                self._gate(request_id)
                if action is None:
                    raise _error(NotionError(400, "invalid_request_url", "Invalid request URL."), request_id)
                fault = sandbox._faults.take(self.command, path)
                if fault is not None:
                    self._faulted(fault, action, params, query, raw, request_id)
                    sandbox._stats.record(route, "timeout", faulted=True, body_bytes=len(raw))
                    return
                if conflict:
                    raise _error(NotionError(409, *FAULT_ERRORS[409]), request_id)
                status, body, headers = 200, self._execute(action, params, query, raw, request_id), {}
        except _Reply as reply:
            status, body, headers = reply.status, reply.body, reply.headers
        sandbox._stats.record(route, status, faulted=fault is not None, body_bytes=len(raw))
        self._send(status, body, headers)

    def _gate(self, request_id: str) -> None:
        """Auth, version and rate limit, in Notion's order; raises ``_Reply`` to refuse."""
        sandbox = self.server.sandbox
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token not in sandbox._tokens:
            raise _error(NotionError(401, "unauthorized", "API token is invalid."), request_id)
        version = self.headers.get("Notion-Version")
        if version is None:
            raise _error(
                NotionError(
                    400,
                    "missing_version",
                    "Notion-Version header failed validation: "
                    "Notion-Version header should be defined, instead was `undefined`.",
                ),
                request_id,
            )
        if version == LEGACY_VERSION:
            raise _error(
                invalid(
                    f"Notion-Version {LEGACY_VERSION} is not supported by this server: databases "
                    f"are containers of data sources since {V2025}. Send {V2025} or {V2026} and use "
                    "the /v1/data_sources endpoints."
                ),
                request_id,
            )
        if version not in (V2025, V2026):
            raise _error(
                invalid(
                    f"Notion-Version header failed validation: Notion-Version header should be "
                    f"one of `{V2025}`, `{V2026}`, instead was `{version}`."
                ),
                request_id,
            )
        admitted, reason, retry_after = sandbox._limiter.acquire(token)
        if not admitted:
            raise _rate_limited(reason, retry_after, request_id)

    def _execute(
        self, action: str, params: dict[str, str], query: dict[str, list[str]], raw: bytes, request_id: str
    ) -> dict:
        """Run one API action; returns the response body or raises ``_Reply`` with an error."""
        sandbox = self.server.sandbox
        try:
            if len(raw) > MAX_BODY_BYTES:
                raise NotionError(
                    413, "validation_error", f"Request body too large: {len(raw)} bytes, the limit is 500KB."
                )
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise NotionError(400, "invalid_json", "Error parsing JSON body.") from None
            if not isinstance(body, dict):
                raise invalid("body failed validation: body should be an object.")
            result = sandbox._dispatch(action, params, query, body, self.headers["Notion-Version"])
        except NotionError as err:
            raise _error(err, request_id) from None
        result["request_id"] = request_id
        return result

    def _faulted(
        self,
        fault: Fault,
        action: str,
        params: dict[str, str],
        query: dict[str, list[str]],
        raw: bytes,
        request_id: str,
    ) -> None:
        """Answer with an injected fault by raising ``_Reply``; returns only after a hang.

        With ``apply_write`` a write is executed first (a write that fails anyway answers with
        its real error).
        """
        result: dict | None = None
        if fault.apply_write and action in WRITES:
            result = self._execute(action, params, query, raw, request_id)
        if fault.status == 429:
            raise _rate_limited(fault.reason or CONNECTION_LIMIT, fault.retry_after or 1, request_id)
        if fault.status is not None:
            code, message = FAULT_ERRORS.get(
                fault.status, ("internal_server_error", "Unexpected error occurred.")
            )
            extra = _committed(result) if fault.committed else None
            reply = _error(NotionError(fault.status, code, message, extra), request_id)
            if fault.retry_after is not None or fault.status == 529:
                reply.headers["Retry-After"] = str(fault.retry_after or 1)
            raise reply
        if fault.timeout_s is not None:  # answer late: the client has given up by then
            self.server.sandbox._stopping.wait(fault.timeout_s)
            if result is not None:
                raise _Reply(200, result)
            raise _error(NotionError(504, *FAULT_ERRORS[504]), request_id)
        self._hang()

    def _hang(self) -> None:
        """Never answer: wait until the client closes the connection or the sandbox stops."""
        self.close_connection = True
        while not self.server.sandbox._stopping.wait(0.05):
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return


def _rate_limited(reason: str, retry_after: int, request_id: str) -> _Reply:
    """A 429 as Notion sends it: which limit (``rate_limit_reason``), Retry-After in the header and body."""
    extra = {"rate_limit_reason": reason, "retry_after": retry_after}
    reply = _error(NotionError(429, *FAULT_ERRORS[429], additional_data=extra), request_id)
    reply.headers["Retry-After"] = str(retry_after)
    return reply


def _committed(result: dict | None) -> dict:
    """``additional_data`` of a 503 on a write Notion saved after its 55 s deadline."""
    extra: dict[str, Any] = {
        "elapsed_ms": "55012",
        "deadline_ms": "55000",
        "retry_guidance": ["Read the object again to confirm the saved change.", "Do not repeat the write."],
    }
    if result and result.get("object") in ("page", "database") and "id" in result:
        extra["committed_resource_id"] = result["id"]
    return extra


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Site Overloaded" if status == 529 else "Error"


def _query_page_size(query: dict[str, list[str]]) -> int:
    size = query.get("page_size", ["100"])[0]
    if not size.isdigit() or not 1 <= int(size) <= 100:
        raise invalid(
            f"query failed validation: query.page_size should be a number between 1 and "
            f"100, instead was `{size}`."
        )
    return int(size)


def _match(method: str, path: str) -> tuple[str, str | None, dict[str, str]]:
    for route_method, pattern, action, label in ROUTES:
        if route_method == method and (m := pattern.match(path)):
            return label, action, {k: unquote(v) for k, v in m.groupdict().items()}
    return f"{method} <invalid>", None, {}


class NotionSandbox:
    """A real HTTP server speaking the Notion API, for the demo and the integration tests.

    Attributes: ``url`` (after ``start``), ``token``, ``parent_page_id`` (a root page shared with
    the integration, under which databases can be created), ``store`` (the data model).
    """

    def __init__(
        self,
        port: int = 0,
        rps: float = 3.0,
        burst: int = 10,
        latency_ms: float = 0.0,
        latency_jitter_ms: float = 0.0,
        speed: float = 1.0,
        token: str = "ntn_sandbox_token",
        workspace_rps: float | None = None,
        workspace_retry_after: int = 0,
    ) -> None:
        self.port = port
        self.token = token
        self._tokens = {token}
        self._clock = VirtualClock(speed)
        self._limiter = RateLimiter(self._clock, rps, burst, workspace_rps, workspace_retry_after)
        self._latency = Latency(self._clock, latency_ms, latency_jitter_ms)
        self._faults = FaultInjector()
        self._conflicts = WriteConflicts()
        self._stats = RequestStats(self._clock)
        self.store = Store(self._clock)
        self.parent_page_id = self.store.root_page_id
        self.url = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    # --------------------------------------------------------------------------------- lifecycle
    def start(self) -> NotionSandbox:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.sandbox = self
        self._server = server
        self.port = server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"notion-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._conns_lock:
            for conn in self._conns:  # wake keep-alive handler threads blocked on reads
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._server = None

    def __enter__(self) -> NotionSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # --------------------------------------------------------------------------------- configuration
    @property
    def speed(self) -> float:
        return self._clock.speed

    def env(self) -> dict[str, str]:
        """Environment variables pointing the platform at this sandbox."""
        return {
            "NOTION_BASE_URL": self.url,
            "NOTION_TOKEN": self.token,
            "NOTION_PARENT_PAGE_ID": self.parent_page_id,
            "NOTION_VERSION": V2025,
            "NOTION_TIME_SCALE": str(self.speed),
        }

    def add_token(self, token: str) -> None:
        """Accept another integration token (own bucket, same workspace bucket)."""
        self._tokens.add(token)

    def set_rate(self, rps: float | None = None, burst: int | None = None) -> None:
        self._limiter.configure(rps, burst)

    def set_latency(self, ms: float, jitter_ms: float = 0.0) -> None:
        self._latency.ms, self._latency.jitter_ms = ms, jitter_ms

    def set_speed(self, speed: float) -> None:
        self._clock.set_speed(speed)

    def set_conflict_rate(self, rate: float) -> None:
        """Share of page writes answered 409 ``conflict_error`` while another write to the same data
        source is in flight (0, the default: Notion publishes no rate)."""
        self._conflicts.rate = rate

    def _write_target(self, action: str | None, params: dict[str, str], raw: bytes) -> str | None:
        """The data source a page create or update writes to (None for anything else)."""
        if action == "create_page":
            try:
                return str(json.loads(raw).get("parent", {}).get("data_source_id") or "") or None
            except (ValueError, AttributeError):
                return None
        if action == "update_page":
            page = self.store.pages.get(params["id"])
            parent = page.parent if page is not None else None
            return getattr(parent, "id", None)
        return None

    def set_block_limit(self, blocks: int | None) -> None:
        """The Free plan's block limit (1,000 for a workspace with several members): creates past
        it answer 403. ``None``: a paid plan."""
        self.store.block_limit = blocks

    def trash_page(self, page_id: str) -> None:
        """Move a page to the trash as a person in the Notion app would (not an API request)."""
        self.store.trash_page(page_id)

    def set_query_lag(self, seconds: float) -> None:
        """New pages appear in data source queries only ``seconds`` (virtual) after their creation."""
        self.store.query_lag_s = seconds / self._clock.speed

    def set_search_lag(self, seconds: float) -> None:
        """New data sources appear in search only ``seconds`` (virtual) after their creation."""
        self.store.search_lag_s = seconds

    def seed_pages(
        self,
        data_source_id: str,
        properties: Iterable[dict[str, Any]],
        start: datetime | None = None,
        per_minute: int = SEED_PER_MINUTE,
    ) -> list[str]:
        """Add pages to a data source without API calls (tests of large data sources).

        ``properties`` are ``POST /v1/pages`` property bodies; pages get ``created_time`` a minute
        apart for every ``per_minute`` of them (default: a sync at 3 requests a second), from
        ``start`` (default: as long ago as that takes). Returns the page ids in order.
        """
        rows = list(properties)
        if start is None:
            start = datetime.now(UTC) - timedelta(minutes=len(rows) // max(per_minute, 1) + 1)
        return self.store.seed_pages(data_source_id, rows, start, per_minute)

    def config(self) -> dict[str, Any]:
        return {
            "rps": self._limiter.rps,
            "burst": self._limiter.burst,
            "workspace_rps": self._limiter.workspace_rps,
            "workspace_retry_after": self._limiter.workspace_retry_after,
            "block_limit": self.store.block_limit,
            "conflict_rate": self._conflicts.rate,
            "latency_ms": self._latency.ms,
            "jitter_ms": self._latency.jitter_ms,
            "speed": self.speed,
        }

    def inject(
        self,
        status: int = 500,
        count: int = 1,
        path_prefix: str | None = None,
        method: str | None = None,
        apply_write: bool = False,
        retry_after: int | None = None,
        reason: str | None = None,
        committed: bool = False,
        after: int = 0,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (after the rate limiter), once
        ``after`` matching requests have gone through.

        With ``apply_write`` a write is executed before the error is returned: the page exists
        although the client saw a 5xx (the duplicate trap). ``retry_after`` is in virtual seconds
        (429/529 default to 1). ``reason``: a 429's ``rate_limit_reason`` (default the connection
        limit). ``committed``: the write is applied and the answer's ``additional_data`` says so
        (``retry_guidance``, and ``committed_resource_id`` for a create), as Notion's 503 does.
        """
        self._faults.add(
            Fault(
                count,
                status=status,
                path_prefix=path_prefix,
                method=method,
                apply_write=apply_write or committed,
                retry_after=retry_after,
                reason=reason,
                committed=committed,
                after=after,
            )
        )

    def inject_timeout(
        self,
        count: int = 1,
        seconds: float | None = None,
        path_prefix: str | None = None,
        method: str | None = None,
        apply_write: bool = False,
    ) -> None:
        """Stall the next ``count`` matching requests.

        ``seconds`` (real) then answer: 504 ``gateway_timeout``, or the real result with
        ``apply_write``; ``None``: never answer, the connection is closed when the client hangs up
        or the sandbox stops.
        """
        self._faults.add(
            Fault(count, timeout_s=seconds, path_prefix=path_prefix, method=method, apply_write=apply_write)
        )

    def clear_faults(self) -> None:
        self._faults.clear()

    # --------------------------------------------------------------------------------- inspection
    def stats(self) -> dict[str, Any]:
        """Request counters and achieved rates, pages per data source and duplicate Salesforce Ids.

        ``duplicates`` only lists data sources that have some: ``{ds_id: {"count": n, "ids":
        {salesforce_id: [page ids]}}}``; ``duplicates_total`` sums the counts.
        """
        duplicates = self.store.duplicates()
        return {
            **self._stats.snapshot(),
            "speed": self.speed,
            "pages_by_data_source": self.store.page_counts(),
            "duplicates": duplicates,
            "duplicates_total": sum(d["count"] for d in duplicates.values()),
        }

    def reset_stats(self) -> None:
        self._stats.reset()

    def pages(self, data_source_id: str, include_trashed: bool = False) -> list[dict]:
        """The pages of a data source as the API would render them (no request, no rate limit)."""
        return self.store.source_pages(data_source_id, include_trashed)

    # --------------------------------------------------------------------------------- dispatch
    def _dispatch(
        self, action: str, params: dict[str, str], query: dict[str, list[str]], body: dict, version: str
    ) -> dict:
        store = self.store
        only = set(query.get("filter_properties", []) + query.get("filter_properties[]", [])) or None
        if action in ("get_database", "get_source"):
            return getattr(store, action)(params["id"], version)
        if action in ("update_database", "update_source", "update_page"):
            return getattr(store, action)(params["id"], body, version)
        if action in ("create_database", "create_source", "create_page", "search"):
            return getattr(store, action)(body, version)
        if action == "get_page":
            return store.get_page(params["id"], version, only)
        if action == "query":
            return store.query(params["id"], body, version, only)
        if action == "delete_block":
            return store.delete_block(params["id"], version)
        cursor = query.get("start_cursor", [None])[0]
        if action == "block_children":
            return store.block_children(params["id"], cursor, _query_page_size(query), version)
        if action == "property_items":
            next_url = f"{self.url}/v1/pages/{params['id']}/properties/{params['prop']}"
            return store.property_items(
                params["id"], params["prop"], cursor, _query_page_size(query), next_url
            )
        bot = {
            "object": "user",
            "id": BOT_USER_ID,
            "name": "Sandbox integration",
            "avatar_url": None,
            "type": "bot",
            "bot": {"owner": {"type": "workspace", "workspace": True}, "workspace_name": "Sandbox"},
        }
        if action == "me":
            return bot
        return {
            "object": "list",
            "results": [bot],
            "next_cursor": None,
            "has_more": False,
            "type": "user",
            "user": {},
        }

    def _admin(self, method: str, path: str, raw: bytes) -> tuple[int, dict]:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return 400, {"error": "invalid JSON"}
        if not isinstance(body, dict):
            return 400, {"error": "body must be a JSON object"}
        try:
            if path == "/_sandbox/stats" and method == "GET":
                return 200, self.stats()
            if path == "/_sandbox/config":
                if method == "POST":
                    self._configure(body)
                return 200, self.config()
            if path == "/_sandbox/faults":
                if method == "POST":
                    self._add_fault(body)
                return 200, {"pending": self._faults.pending()}
            if path == "/_sandbox/seed" and method == "POST":
                start = body.get("start")
                ids = self.seed_pages(
                    body["data_source_id"],
                    body.get("pages", []),
                    datetime.fromisoformat(start) if start else None,
                    int(body.get("per_minute", SEED_PER_MINUTE)),
                )
                return 200, {"ids": ids}
            if path == "/_sandbox/search_lag" and method == "POST":
                self.set_search_lag(float(body["seconds"]))
                return 200, {"search_lag_s": self.store.search_lag_s}
            if path == "/_sandbox/reset" and method == "POST":
                if body.get("stats", True):
                    self.reset_stats()
                if body.get("faults", True):
                    self.clear_faults()
                if body.get("data", False):
                    self.store.reset()
                self._limiter.reset()
                return 200, {"ok": True}
        except NotionError as exc:
            return exc.status, {"error": exc.message}
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"unknown admin endpoint {method} {path}"}

    def _configure(self, body: dict) -> None:
        if "speed" in body:
            self.set_speed(float(body["speed"]))
        if "rps" in body or "burst" in body:
            self.set_rate(body.get("rps"), body.get("burst"))
        if "workspace_rps" in body:
            self._limiter.workspace_rps = body["workspace_rps"]
        if "workspace_retry_after" in body:
            self._limiter.workspace_retry_after = int(body["workspace_retry_after"])
        if "conflict_rate" in body:
            self.set_conflict_rate(float(body["conflict_rate"]))
        if "block_limit" in body:
            self.set_block_limit(None if body["block_limit"] is None else int(body["block_limit"]))
        if "latency_ms" in body or "jitter_ms" in body:
            self.set_latency(
                float(body.get("latency_ms", self._latency.ms)),
                float(body.get("jitter_ms", self._latency.jitter_ms)),
            )

    def _add_fault(self, body: dict) -> None:
        if body.get("clear"):
            self.clear_faults()
            return
        common = {
            "count": int(body.get("count", 1)),
            "path_prefix": body.get("path_prefix"),
            "method": body.get("method"),
            "apply_write": bool(body.get("apply_write", False)),
        }
        if "timeout" in body:
            self.inject_timeout(seconds=body["timeout"], **common)
        else:
            self.inject(
                status=int(body.get("status", 500)),
                retry_after=body.get("retry_after"),
                reason=body.get("reason"),
                committed=bool(body.get("committed", False)),
                **common,
            )
