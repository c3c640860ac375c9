"""A local Salesforce over HTTPS: REST query/queryMore/queryAll, describe, limits, Bulk API 2.0 query
jobs, the daily API budget, and admin endpoints (``/_sandbox/...``) to edit data and inject faults.

Responses copy Salesforce's shapes, headers and error bodies closely enough that simple-salesforce
(and our extractor) cannot tell the difference; see ``notion_sync_tests/test_sandbox_salesforce.py``.
Only session login is served (``SALESFORCE_INSTANCE_URL`` + ``SALESFORCE_SESSION_ID``).

API (``/services/data/vNN.0``, 31.0-63.0; each call costs 1 of the daily budget):
``GET /services/data/`` versions · ``GET query?q=`` / ``queryAll?q=`` (2,000 a page, or
``Sforce-Query-Options: batchSize=200..2000``) and their ``nextRecordsUrl`` · ``GET limits`` ·
``GET sobjects``, ``sobjects/<Object>``, ``sobjects/<Object>/describe``, ``sobjects/<Object>/<Id>`` ·
Bulk 2.0 ``POST jobs/query``, ``GET jobs/query[/<id>]``, ``GET jobs/query/<id>/results?maxRecords=&locator=``,
``PATCH`` (abort) and ``DELETE jobs/query/<id>``. Request URIs over 16,384 characters get 414.

Admin (no session, free): ``GET|POST|DELETE /_sandbox/records/<Object>/<Id>`` (read, edit, soft delete;
``?hard=true`` purges), ``POST /_sandbox/records/<Object>`` (create), ``POST|DELETE /_sandbox/faults``
(``{"status": 503, "count": 2}``, ``{"drop": 1}``, ``{"delay": 5}``, optional ``"match": "/jobs/"``),
``POST /_sandbox/budget`` (``{"remaining": N}``), ``GET|DELETE /_sandbox/stats``,
``GET /_sandbox/edges/<Object>``, ``GET /_sandbox/info``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from notion_sync.sandbox import soql, tls
from notion_sync.sandbox.sf_data import (
    DEFAULT_END,
    DataError,
    ResultSet,
    SalesforceData,
    describe_global_entry,
    describe_sobject,
    format_datetime,
    full_record,
    make_id,
    parse_id,
)

VERSIONS = [f"{v}.0" for v in range(31, 64)]
MAX_URI = 16_384  # Salesforce refuses longer request URIs with 414
REST_PAGE = 2_000
BULK_PAGE = 50_000
CSV_CHUNK = 500  # records per chunk of a streamed Bulk results page
DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}


class ApiError(Exception):
    """An error answered as Salesforce does: ``[{"message": ..., "errorCode": ...}]``."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def _not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


@dataclass
class Fault:
    kind: str  # status | drop | delay
    remaining: int
    status: int = 503
    delay: float = 0.0
    match: str | None = None  # only requests whose path contains this


@dataclass
class BulkJob:
    id: str
    operation: str
    sobject: str
    version: str
    results: ResultSet
    created: float
    delimiter: str
    line_ending: str
    state: str = "UploadComplete"
    fields: list[str] = field(default_factory=list)


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _address(record: Any, prefix: str) -> dict[str, Any] | None:
    parts = {
        "city": record[prefix + "City"],
        "country": record[prefix + "Country"],
        "geocodeAccuracy": record[prefix + "GeocodeAccuracy"],
        "latitude": record[prefix + "Latitude"],
        "longitude": record[prefix + "Longitude"],
        "postalCode": record[prefix + "PostalCode"],
        "state": record[prefix + "State"],
        "street": record[prefix + "Street"],
    }
    return parts if any(v is not None for v in parts.values()) else None


class SalesforceSandbox:
    """Serve a seeded Salesforce org on ``https://127.0.0.1:<port>`` from a daemon thread.

    ``records`` is the number of Accounts (see :mod:`notion_sync.sandbox.sf_data`). Every API request
    under ``/services/`` costs 1 from ``api_budget``; admin endpoints are free and need no session.
    """

    session_id = "00DDn0000000001!AQ0AQSandboxSessionToken"

    def __init__(
        self,
        records: int = 1000,
        seed: int = 7,
        port: int = 0,
        workdir: Path | None = None,
        api_budget: int = 1_000_000,
        *,
        days: int = 30,
        end: datetime = DEFAULT_END,
        invalid_emails: bool = True,
        custom_fields: int = 40,
        bulk_processing_seconds: float = 0.05,
    ) -> None:
        self.data = SalesforceData(
            records, seed, days=days, end=end, invalid_emails=invalid_emails, custom_fields=custom_fields
        )
        self.port = port
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="sf-sandbox-")
            workdir = Path(self._tempdir.name)
        self.workdir = workdir
        self._address_fields = {
            obj: {name for name, f in fields.items() if f.type == "address"}
            for obj, fields in self.data.fields.items()
        }
        self.api_max = api_budget
        self.api_used = 0
        self.bulk_processing_seconds = bulk_processing_seconds
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._cursors: OrderedDict[str, ResultSet] = OrderedDict()
        self._jobs: dict[str, BulkJob] = {}
        self._serial = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.ca_file: Path | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> SalesforceSandbox:
        files = tls.generate(self.workdir / "tls")
        self.ca_file = files.ca_file
        self._server = _Server(("127.0.0.1", self.port), _Handler, files.server_context(), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="sf-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> SalesforceSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The CONTRACT.md variables that point a client at this sandbox."""
        return {
            "SALESFORCE_INSTANCE_URL": self.url,
            "SALESFORCE_SESSION_ID": self.session_id,
            "SALESFORCE_CA_BUNDLE": str(self.ca_file),
        }

    # ------------------------------------------------------------------- in-process admin API

    def get(self, obj: str, record_id: str) -> dict[str, Any]:
        return self.data.get(obj, record_id)

    def update(self, obj: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self.data.update(obj, record_id, fields)

    def delete(self, obj: str, record_id: str, *, hard: bool = False) -> None:
        self.data.delete(obj, record_id, hard=hard)

    def create(self, obj: str, fields: dict[str, Any]) -> str:
        return self.data.create(obj, fields)

    def inject_fault(
        self,
        status: int | None = None,
        count: int = 1,
        *,
        drop: int = 0,
        delay: float = 0.0,
        match: str | None = None,
    ) -> None:
        """The next ``count`` API requests (whose path contains ``match``) answer ``status``, or sleep
        ``delay`` seconds first; ``drop=N`` cuts the next N responses off halfway instead."""
        with self._lock:
            if status is not None:
                self._faults.append(Fault("status", count, status=status, match=match))
            if delay:
                self._faults.append(Fault("delay", count, delay=delay, match=match))
            if drop:
                self._faults.append(Fault("drop", drop, match=match))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_budget(self, remaining: int, maximum: int | None = None) -> None:
        """Set the daily API allowance left (and optionally its maximum)."""
        with self._lock:
            if maximum is not None:
                self.api_max = maximum
            self.api_used = max(0, self.api_max - remaining)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "statuses": dict(self._statuses),
                "api_usage": {"used": self.api_used, "max": self.api_max},
                "faults_pending": sum(f.remaining for f in self._faults),
                "bulk_jobs": len(self._jobs),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._statuses.clear()

    # --------------------------------------------------------------------- request accounting

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.match is None or fault.match in path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _charge(self, endpoint: str) -> None:
        """Count a request against the daily budget; refuse it once the budget is spent."""
        with self._lock:
            self._requests[endpoint] += 1
            if self.api_used >= self.api_max:
                raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self.api_used += 1

    def _record_status(self, status: int) -> None:
        with self._lock:
            self._statuses[str(status)] += 1

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    # ------------------------------------------------------------------------- REST queries

    def _run(self, text: str, include_deleted: bool) -> tuple[soql.Query, ResultSet]:
        try:
            query = soql.bind(soql.parse(text), self.data.fields)
        except soql.SoqlError as exc:
            raise ApiError(400, exc.error_code, exc.message) from exc
        return query, self.data.execute(query, include_deleted)

    def rest_record(self, obj: str, record: Any, fields: list[str], version: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {"type": obj, "url": f"/services/data/v{version}/sobjects/{obj}/{record['Id']}"}
        }
        record = full_record(record)
        for name in fields:
            out[name] = record.get(name)
        for name in self._address_fields[obj].intersection(fields):  # REST returns compound fields as objects
            out[name] = _address(record, name[: -len("Address")])
        return out

    def query_page(
        self, locator: str, results: ResultSet, offset: int, batch: int, version: str, endpoint: str, obj: str
    ) -> dict[str, Any]:
        records = results.page(offset, batch)
        done = offset + len(records) >= results.total
        page: dict[str, Any] = {"totalSize": results.total, "done": done}
        if not done:
            page["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{locator}-{offset + len(records)}"
        page["records"] = [self.rest_record(obj, r, results.fields, version) for r in records]
        return page

    def start_query(self, text: str, include_deleted: bool, batch: int, version: str) -> dict[str, Any]:
        query, results = self._run(text, include_deleted)
        if query.is_count:
            return {"totalSize": results.total, "done": True, "records": []}
        locator = make_id("01g", self._next_serial())
        with self._lock:
            self._cursors[locator] = results
            while len(self._cursors) > 500:  # Salesforce also lets old cursors expire
                self._cursors.popitem(last=False)
        endpoint = "queryAll" if include_deleted else "query"
        return self.query_page(locator, results, 0, batch, version, endpoint, query.sobject)

    def query_more(
        self, locator: str, offset: int, batch: int, version: str, endpoint: str
    ) -> dict[str, Any]:
        with self._lock:
            results = self._cursors.get(locator)
        if results is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self.query_page(locator, results, offset, batch, version, endpoint, results.sobject)

    # ---------------------------------------------------------------------------- Bulk 2.0

    def create_job(self, payload: dict[str, Any], version: str) -> BulkJob:
        operation = payload.get("operation")
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "API_ERROR", f"Invalid operation: {operation}")
        query, results = self._run(str(payload.get("query") or ""), operation == "queryAll")
        if query.is_count:
            raise ApiError(400, "API_ERROR", "Aggregate Relationships not supported in Bulk Query")
        types = self.data.fields[query.sobject]
        if any(types[name].type in ("address", "location") for name in query.fields):
            raise ApiError(400, "API_ERROR", "Selecting compound data not supported in Bulk Query")
        job = BulkJob(
            id=make_id("750", self._next_serial()),
            operation=operation,
            sobject=query.sobject,
            version=version,
            results=results,
            created=time.time(),
            delimiter=str(payload.get("columnDelimiter") or "COMMA"),
            line_ending=str(payload.get("lineEnding") or "LF"),
            fields=query.fields,
        )
        if job.delimiter not in DELIMITERS or job.line_ending not in ("LF", "CRLF"):
            raise ApiError(400, "API_ERROR", "Invalid columnDelimiter or lineEnding")
        with self._lock:
            self._jobs[job.id] = job
        return job

    def job(self, job_id: str) -> BulkJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise _not_found()
        if job.state in ("UploadComplete", "InProgress"):
            done = time.time() - job.created >= self.bulk_processing_seconds
            job.state = "JobComplete" if done else "InProgress"
        return job

    def job_info(self, job: BulkJob) -> dict[str, Any]:
        stamp = format_datetime(int(job.created * 1000))
        info: dict[str, Any] = {
            "id": job.id,
            "operation": job.operation,
            "object": job.sobject,
            "createdById": "005Dn0000000001AAA",
            "createdDate": stamp,
            "systemModstamp": stamp,
            "state": job.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(job.version),
            "jobType": "V2Query",
            "lineEnding": job.line_ending,
            "columnDelimiter": job.delimiter,
        }
        if job.state == "JobComplete":
            info.update(
                numberRecordsProcessed=job.results.total,
                retries=0,
                totalProcessingTime=int(self.bulk_processing_seconds * 1000),
            )
        return info

    def drop_job(self, job_id: str) -> None:
        with self._lock:
            if self._jobs.pop(job_id, None) is None:
                raise _not_found()


def _encode_locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _decode_locator(locator: str) -> int:
    try:
        return int(base64.b64decode(locator + "=" * (-len(locator) % 4)).decode())
    except ValueError as exc:
        raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}") from exc


def _release(version: str) -> str:
    """API version → release label: 59.0 is "Winter '24", 60.0 "Spring '24", 62.0 "Winter '25"."""
    n = int(float(version)) - 59
    return f"{('Winter', 'Spring', 'Summer')[n % 3]} '{24 + n // 3}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up stop()

    def __init__(
        self, address: tuple[str, int], handler: type, context: ssl.SSLContext, sandbox: SalesforceSandbox
    ) -> None:
        super().__init__(address, handler)
        self.context = context
        self.sandbox = sandbox

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's own thread, not the accept loop.
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response (timeouts, dropped connections) are expected


_VERSION_PATH = re.compile(r"^/services/data/v(\d+\.\d)(/.*)?$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms ACK stalls

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ------------------------------------------------------------------------------- plumbing

    @property
    def sandbox(self) -> SalesforceSandbox:
        return self.server.sandbox

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character in request body: {exc}") from exc

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json;charset=UTF-8",
        headers: dict[str, str] | None = None,
        drop: bool = False,
    ) -> None:
        self.sandbox._record_status(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if drop:
            self.wfile.write(body[: len(body) // 2])
            self._hang_up()
            return
        self.wfile.write(body)

    def _hang_up(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _json(
        self, status: int, payload: Any, headers: dict[str, str] | None = None, drop: bool = False
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else b""
        self._send(status, body, headers=headers, drop=drop)

    def _limit_headers(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.sandbox.api_used}/{self.sandbox.api_max}"}

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if len(self.path) > MAX_URI:
                raise ApiError(414, "URI_TOO_LONG", f"Request-URI of {len(self.path)} characters is too long")
            if path.startswith("/_sandbox/"):
                self._json(*self._admin(method, path, params))
            elif path.rstrip("/") == "/services/data":
                self._json(
                    200,
                    [{"label": _release(v), "url": f"/services/data/v{v}", "version": v} for v in VERSIONS],
                    self._limit_headers(),
                )
            elif path.startswith("/services/"):
                self._api(method, path, params)
            else:
                raise _not_found()
        except ApiError as exc:
            headers = self._limit_headers() if path.startswith("/services/") else None
            self._json(exc.status, [{"message": exc.message, "errorCode": exc.error_code}], headers)
        except DataError as exc:
            self._json(exc.status, [{"message": exc.message, "errorCode": exc.error_code, "fields": []}])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    # ------------------------------------------------------------------------------- the API

    def _api(self, method: str, path: str, params: dict[str, str]) -> None:
        sandbox = self.sandbox
        fault = sandbox._take_fault(path)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)
        elif fault is not None and fault.kind == "status":
            code = {500: "UNKNOWN_EXCEPTION", 503: "SERVER_UNAVAILABLE"}.get(
                fault.status, "UNKNOWN_EXCEPTION"
            )
            raise ApiError(fault.status, code, f"Injected fault: HTTP {fault.status}")
        drop = fault is not None and fault.kind == "drop"

        auth = self.headers.get("Authorization", "")
        if auth.split(" ", 1)[-1].strip() != sandbox.session_id or not auth.startswith(("Bearer ", "OAuth ")):
            raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        match = _VERSION_PATH.match(path)
        if match is None or match.group(1) not in VERSIONS:
            sandbox._charge("unknown")
            raise _not_found()
        version, rest = match.group(1), (match.group(2) or "/").rstrip("/") or "/"
        parts = rest.strip("/").split("/")
        head = parts[0]

        if head == "jobs" and len(parts) >= 2 and parts[1] == "query":
            self._bulk(method, parts[2:], params, version, drop)
            return
        if method != "GET":
            sandbox._charge("unsupported")
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET")
        if head in ("query", "queryAll") and len(parts) == 1:
            sandbox._charge(head)
            if "q" not in params:
                raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
            payload = sandbox.start_query(params["q"], head == "queryAll", self._batch_size(), version)
        elif head in ("query", "queryAll") and len(parts) == 2:
            sandbox._charge("queryMore")
            locator, _, offset = parts[1].rpartition("-")
            if not locator or not offset.isdigit():
                raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            payload = sandbox.query_more(locator, int(offset), self._batch_size(), version, head)
        elif head == "limits":
            sandbox._charge("limits")
            payload = self._limits()
        elif head == "sobjects":
            payload = self._sobjects(parts[1:], version)
        elif rest == "/":
            sandbox._charge("resources")
            payload = {
                name: f"/services/data/v{version}/{name}"
                for name in ("sobjects", "query", "queryAll", "limits", "jobs")
            }
        else:
            sandbox._charge("unknown")
            raise _not_found()
        self._json(200, payload, self._limit_headers(), drop=drop)

    def _batch_size(self) -> int:
        options = self.headers.get("Sforce-Query-Options", "")
        match = re.search(r"batchSize=(\d+)", options)
        return min(max(int(match.group(1)), 200), REST_PAGE) if match else REST_PAGE

    def _limits(self) -> dict[str, Any]:
        sandbox = self.sandbox
        jobs = len(sandbox._jobs)
        return {
            "DailyApiRequests": {
                "Max": sandbox.api_max,
                "Remaining": max(0, sandbox.api_max - sandbox.api_used),
            },
            "DailyBulkV2QueryJobs": {"Max": 10_000, "Remaining": max(0, 10_000 - jobs)},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976_562, "Remaining": 976_562},
        }

    def _sobjects(self, parts: list[str], version: str) -> Any:
        data = self.sandbox.data
        if not parts:
            self.sandbox._charge("describeGlobal")
            return {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [describe_global_entry(o, version) for o in data.sobjects.values()],
            }
        sobject = data.sobject(parts[0])
        if len(parts) == 2 and parts[1] == "describe":
            self.sandbox._charge("describe")
            if sobject is None:
                raise _not_found()
            return describe_sobject(sobject, version)
        self.sandbox._charge("sobject")
        if sobject is None:
            raise _not_found()
        if len(parts) == 1:
            return {"objectDescribe": describe_global_entry(sobject, version), "recentItems": []}
        if len(parts) == 2 and parse_id(sobject.key_prefix, parts[1]) is not None:
            try:
                record = data.get(sobject.name, parts[1])
            except DataError as exc:
                raise _not_found() from exc
            if record["IsDeleted"]:
                raise _not_found()
            fields = [f.name for f in sobject.fields]
            return self.sandbox.rest_record(sobject.name, record, fields, version)
        raise _not_found()

    def _bulk(self, method: str, parts: list[str], params: dict[str, str], version: str, drop: bool) -> None:
        sandbox = self.sandbox
        if not parts and method == "POST":
            sandbox._charge("bulk2.create")
            job = sandbox.create_job(self._body(), version)
            self._json(200, sandbox.job_info(job), self._limit_headers(), drop=drop)
            return
        if not parts and method == "GET":
            sandbox._charge("bulk2.list")
            jobs = [sandbox.job_info(sandbox.job(job_id)) for job_id in list(sandbox._jobs)]
            self._json(200, {"done": True, "records": jobs, "nextRecordsUrl": None}, self._limit_headers())
            return
        endpoint = {"GET": "bulk2.status", "DELETE": "bulk2.delete", "PATCH": "bulk2.abort"}.get(method, "")
        if len(parts) == 2 and parts[1] == "results" and method == "GET":
            endpoint = "bulk2.results"
        sandbox._charge(endpoint or "unsupported")
        job = sandbox.job(parts[0])
        if endpoint == "bulk2.results":
            self._results(job, params, drop)
        elif endpoint == "bulk2.status" and len(parts) == 1:
            self._json(200, sandbox.job_info(job), self._limit_headers(), drop=drop)
        elif endpoint == "bulk2.delete" and len(parts) == 1:
            sandbox.drop_job(job.id)
            self._send(204, headers=self._limit_headers())
        elif endpoint == "bulk2.abort" and len(parts) == 1:
            if self._body().get("state") != "Aborted":
                raise ApiError(400, "INVALIDJOBSTATE", "Invalid state for a query job")
            job.state = "Aborted"
            self._json(200, sandbox.job_info(job), self._limit_headers())
        else:
            raise _not_found()

    def _results(self, job: BulkJob, params: dict[str, str], drop: bool) -> None:
        if job.state != "JobComplete":
            raise ApiError(400, "API_ERROR", f"Job {job.id} is not complete (state {job.state})")
        offset = _decode_locator(params["locator"]) if params.get("locator") else 0
        size = int(params.get("maxRecords") or BULK_PAGE)
        if size <= 0:
            raise ApiError(400, "INVALIDMAXRECORDS", "maxRecords must be a positive integer")
        total = job.results.total
        records = job.results.page(offset, size) if offset < total else []
        next_offset = offset + len(records)
        headers = {
            **self._limit_headers(),
            "Sforce-Locator": _encode_locator(next_offset) if next_offset < total else "null",
            "Sforce-NumberOfRecords": str(len(records)),
        }
        self.sandbox._record_status(200)
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        terminator = "\r\n" if job.line_ending == "CRLF" else "\n"
        for start in range(0, max(len(records), 1), CSV_CHUNK):
            buffer = io.StringIO()
            writer = csv.writer(
                buffer, delimiter=DELIMITERS[job.delimiter], lineterminator=terminator, quoting=csv.QUOTE_ALL
            )
            if start == 0:
                writer.writerow(job.fields)
            writer.writerows(
                [_csv_value(r[f]) for f in job.fields]
                for r in map(full_record, records[start : start + CSV_CHUNK])
            )
            chunk = buffer.getvalue().encode()
            self.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
            if drop:
                self._hang_up()
                return
        self.wfile.write(b"0\r\n\r\n")

    # ------------------------------------------------------------------------------- admin

    def _admin(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        sandbox = self.sandbox
        parts = path.strip("/").split("/")[1:]
        route = (method, parts[0] if parts else "", len(parts))
        if route[:2] == ("GET", "records") and len(parts) == 3:
            return 200, sandbox.get(parts[1], parts[2])
        if route[:2] == ("POST", "records") and len(parts) == 3:
            return 200, sandbox.update(parts[1], parts[2], self._body())
        if route[:2] == ("DELETE", "records") and len(parts) == 3:
            sandbox.delete(parts[1], parts[2], hard=params.get("hard") == "true")
            return 200, {"id": parts[2], "success": True, "errors": []}
        if route == ("POST", "records", 2):
            return 201, {"id": sandbox.create(parts[1], self._body()), "success": True, "errors": []}
        if route == ("POST", "faults", 1):
            body = self._body()
            sandbox.inject_fault(
                body.get("status"),
                int(body.get("count", 1)),
                drop=int(body.get("drop", 0)),
                delay=float(body.get("delay", 0)),
                match=body.get("match"),
            )
            return 200, sandbox.stats()
        if route == ("DELETE", "faults", 1):
            sandbox.clear_faults()
            return 200, sandbox.stats()
        if route == ("POST", "budget", 1):
            body = self._body()
            sandbox.set_budget(int(body["remaining"]), body.get("max"))
            return 200, sandbox.stats()["api_usage"]
        if route == ("GET", "stats", 1):
            return 200, sandbox.stats()
        if route == ("DELETE", "stats", 1):
            sandbox.reset_stats()
            return 200, sandbox.stats()
        if route == ("GET", "edges", 2):
            return 200, sandbox.data.edge_records(parts[1])
        if route == ("GET", "info", 1):
            data = sandbox.data
            return 200, {
                "records": data.records,
                "seed": data.seed,
                "counts": data.counts,
                "start": format_datetime(data.start_ms),
                "end": format_datetime(data.end_ms),
                "invalid_email_ids": data.invalid_email_ids(),
            }
        raise _not_found()
