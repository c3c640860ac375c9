"""A local Salesforce over HTTPS: REST query/queryMore/queryAll, describe, limits, Bulk API 2.0 query
jobs, the daily API budget, logins, and admin endpoints (``/_sandbox/...``) to edit data and inject faults.

Responses copy Salesforce's shapes, headers and error bodies closely enough that simple-salesforce
(and our extractor) cannot tell the difference; see ``notion_sync_tests/test_sandbox_salesforce.py``.
Logins (see :mod:`~notion_sync.sandbox.sf_login`): session login (``SALESFORCE_INSTANCE_URL`` +
``SALESFORCE_SESSION_ID``), OAuth 2.0 ``POST /services/oauth2/token`` (JWT bearer, client
credentials) and SOAP password login (``POST /services/Soap/u/<version>``, refused from 65.0 on),
each login a new session, at most 3,600 logins per user per hour. simple-salesforce posts logins to
``https://<domain>.salesforce.com``, which :mod:`~notion_sync.sandbox.connect_proxy` tunnels here;
see :meth:`SalesforceSandbox.jwt_env`, :meth:`~SalesforceSandbox.client_credentials_env` and
:meth:`~SalesforceSandbox.password_env`.

API (``/services/data/vNN.0``, 31.0-68.0; each call costs 1 of the daily budget):
``GET /services/data/`` versions · ``GET query?q=`` / ``queryAll?q=`` (2,000 a page, or
``Sforce-Query-Options: batchSize=200..2000``) and their ``nextRecordsUrl`` · ``GET limits`` ·
``GET sobjects``, ``sobjects/<Object>``, ``sobjects/<Object>/describe``, ``sobjects/<Object>/<Id>`` ·
``GET sobjects/<Object>/deleted/?start=&end=`` (getDeleted: the last 30 days, whole minutes) ·
Bulk 2.0 ``POST jobs/query``, ``GET jobs/query[/<id>]``, ``GET jobs/query/<id>/results?maxRecords=&locator=``,
``PATCH`` (abort) and ``DELETE jobs/query/<id>``. Request URIs over 16,384 characters get 414.

Admin (no session, free): ``GET|POST|DELETE /_sandbox/records/<Object>/<Id>`` (read, edit, soft delete;
``?modstamp=<past datetime>`` commits the edit or delete late, ``DELETE ?hard=true`` purges),
``POST /_sandbox/records/<Object>`` (create), ``POST|DELETE /_sandbox/faults``
(``{"status": 503, "count": 2}``, ``{"drop": 1}``, ``{"delay": 5}``, ``{"expire": 1}``, optional
``"match": "/jobs/"``), ``DELETE /_sandbox/sessions`` (expire them all), ``POST /_sandbox/logins``
(``{"per_hour": N}``), ``POST /_sandbox/budget`` (``{"remaining": N}``), ``GET|DELETE /_sandbox/stats``,
``GET /_sandbox/edges/<Object>``, ``GET /_sandbox/info``, ``POST /_sandbox/records/<Object>/<Id>/undelete``,
``POST /_sandbox/clock`` (``{"advance": seconds}``: the org's clock moves on). In-process only:
:meth:`~SalesforceSandbox.fail_bulk_jobs` (the next jobs end ``Failed`` or ``Aborted``) and
``bulk_unsupported`` (objects whose Bulk jobs are refused with ``INVALIDENTITY``).

Change Data Capture (:mod:`~notion_sync.sandbox.pubsub_server`): the Pub/Sub API on its own gRPC port
(``SALESFORCE_PUBSUB_ENDPOINT``); ``GET|POST /_sandbox/cdc`` (``{"enabled": ["Account"],
"allocation": N}``), ``POST /_sandbox/cdc/gap`` (``{"object", "ids", "change_type"}``) and
``POST /_sandbox/cdc/overflow`` (``{"object"}``).
"""

from __future__ import annotations

import array
import base64
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from cryptography import x509

from notion_sync.salesforce.ids import org_id_of_session
from notion_sync.sandbox import sf_login, soql, tls
from notion_sync.sandbox.connect_proxy import ConnectProxy
from notion_sync.sandbox.pubsub_server import EventBus, PubSubServer, PubSubService, describe
from notion_sync.sandbox.sf_data import (
    DAY_MS,
    DEFAULT_END,
    DataError,
    LazyRecord,
    ResultSet,
    SalesforceData,
    describe_global_entry,
    describe_sobject,
    format_datetime,
    full_record,
    make_id,
    parse_datetime,
    parse_id,
)

VERSIONS = [f"{v}.0" for v in range(31, 69)]  # 68.0 is Winter '27
MAX_URI = 16_384  # Salesforce refuses longer request URIs with 414
REST_PAGE = 2_000
AGGREGATE_ROWS = 2_000  # groups an aggregate query may answer (it has no queryMore)
COMPOSITE_LIMIT, COMPOSITE_QUERIES = 25, 5  # subrequests of one /composite call, and queries among them
BULK_PAGE = 50_000
CSV_CHUNK = 500  # records per chunk of a streamed Bulk results page
LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com", "*.my.salesforce.com")
REPLICATION_DAYS = 30  # getDeleted refuses a start further back (INVALID_REPLICATION_DATE)
MINUTE_MS = 60_000
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
    kind: str  # status | drop | delay | expire (all sessions, before the request is authenticated)
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
    outcome: str = "JobComplete"  # the state it reaches when processed: JobComplete, Failed or Aborted


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def csv_renderer(fields: Sequence[str], delimiter: str, terminator: str) -> Callable[[Any], bytes]:
    """One Bulk 2.0 CSV line per record (every value quoted), as bytes. The header is
    ``render(dict(zip(fields, fields)))``. Not thread-safe: make one per request."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=terminator, quoting=csv.QUOTE_ALL)

    def render(record: Any) -> bytes:
        record = full_record(record)
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_csv_value(record[name]) for name in fields])
        return buffer.getvalue().encode()

    return render


RENDER_BLOCK = 4_096  # base records per render-cache file
_RENDER_FORMAT = 1  # bump when the block file layout changes
_SOURCES = (Path(__file__), Path(__file__).with_name("sf_data.py"))


def _block_path(directory: Path, number: int) -> Path:
    return directory / f"{number:07d}.bin"


class RenderCache:
    """Base records already rendered (one CSV line or one REST JSON object each), in files on disk.

    Generating a record in Python costs ~50 us and rendering it ~25-45 us more, so a big sandbox
    serves only ~10,000-15,000 records/s and, in a benchmark, takes the CPU its clients are being
    measured on. With a cache, the first request for a block of ``RENDER_BLOCK`` indexes renders the
    whole block into a file; later requests (and other sandbox processes) slice it.

    Only base records are cached: a record an admin edited, created or purged never appears in a
    result set as a base record (:meth:`SalesforceData.execute` takes it from the overrides), so it
    is rendered afresh and admin changes always win. Only cross-object formulas (a Contact's
    ``Account_Name__c``) change a base record: the key counts the writes to the records they read.
    A block file is keyed by everything that decides its bytes: the data's parameters, the object,
    the rendering (format, fields, delimiter, line ending, API version), those writes, the Python
    version (seeds use ``hash``) and the source of the sandbox itself. Files are written whole and
    renamed into place, so concurrent fills of one block are harmless.

    Block file: ``n`` (uint32 LE), ``n + 1`` offsets (native uint64) into the body, then the body.
    """

    def __init__(self, directory: Path, data: SalesforceData, memory_blocks: int = 4) -> None:
        self.directory = Path(directory)
        self.data = data
        digest = hashlib.sha256(repr((_RENDER_FORMAT, sys.version_info[:2], data.parameters())).encode())
        for source in _SOURCES:
            digest.update(source.read_bytes())
        self._base_key = digest.hexdigest()
        self._memory_blocks = memory_blocks
        self._loaded: OrderedDict[tuple[str, int], tuple[bytes, memoryview, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def key_directory(self, obj: str, rendering: tuple[Any, ...]) -> Path:
        key = hashlib.sha256(repr((self._base_key, obj, rendering)).encode()).hexdigest()[:32]
        return self.directory / key

    def fragments(
        self, obj: str, rendering: tuple[Any, ...], records: Sequence[Any], render: Callable[[Any], bytes]
    ) -> list[bytes]:
        """``[render(r) for r in records]``, base records read from (or first written to) the cache."""
        directory = self.key_directory(obj, rendering)
        out: list[bytes] = []
        current, block = -1, None
        cached = fresh = 0
        for record in records:
            if not isinstance(record, LazyRecord):
                out.append(render(record))
                fresh += 1
                continue
            number, position = divmod(record.index, RENDER_BLOCK)
            if number != current:
                block, current = self._block(directory, obj, number, render), number
            body, offsets, start = block  # type: ignore[misc]
            out.append(body[start + offsets[position] : start + offsets[position + 1]])
            cached += 1
        with self._lock:
            self.stats["records_cached"] += cached
            self.stats["records_rendered"] += fresh
        return out

    def warm(
        self, obj: str, rendering: tuple[Any, ...], indexes: Sequence[int], render: Callable[[Any], bytes]
    ) -> int:
        """Make sure the blocks holding ``indexes`` are on disk; returns the blocks rendered now."""
        directory = self.key_directory(obj, rendering)
        written = 0
        for number in sorted({i // RENDER_BLOCK for i in indexes}):
            path = _block_path(directory, number)
            if not path.exists():
                self._write(path, obj, number, render)
                written += 1
        return written

    def _block(
        self, directory: Path, obj: str, number: int, render: Callable[[Any], bytes]
    ) -> tuple[bytes, memoryview, int]:
        name = (str(directory), number)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        path = _block_path(directory, number)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = self._write(path, obj, number, render)
        count = int.from_bytes(raw[:4], "little")
        block = (raw, memoryview(raw)[4 : 4 + 8 * (count + 1)].cast("Q"), 4 + 8 * (count + 1))
        with self._lock:
            self._loaded[name] = block
            while len(self._loaded) > self._memory_blocks:
                self._loaded.popitem(last=False)
        return block

    def _write(self, path: Path, obj: str, number: int, render: Callable[[Any], bytes]) -> bytes:
        first = number * RENDER_BLOCK
        last = min(first + RENDER_BLOCK, self.data.counts[obj])
        parts = [render(LazyRecord(self.data, obj, i)) for i in range(first, last)]
        offsets = array.array("Q", [0])
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        raw = b"".join([len(parts).to_bytes(4, "little"), offsets.tobytes(), *parts])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".block-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.replace(temporary, path)
        with self._lock:
            self.stats["blocks_written"] += 1
        return raw


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
    ``render_cache`` (a directory) keeps rendered records on disk to serve big volumes fast; see
    :class:`RenderCache` and :meth:`warm`. It changes no byte of any response.
    """

    session_id = "00DDn0000000001!AQ0AQSandboxSessionToken"
    username = "integration@sandbox.notion-sync.test"
    password = "sandbox-password"
    security_token = "SandboxSecurityToken42"
    consumer_key = "3MVG9SandboxConnectedAppConsumerKey.notion_sync"
    consumer_secret = "SandboxConsumerSecret0123456789ABCDEF"
    my_domain = "sandbox-org.my"  # SALESFORCE_DOMAIN of the client credentials flow

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
        long_text_fields: int = 0,
        bulk_processing_seconds: float = 0.05,
        render_cache: Path | None = None,
        logins_per_hour: int = sf_login.LOGINS_PER_HOUR,
        cdc_objects: Sequence[str] = ("Account", "Contact"),
        extra_objects: Sequence[str] = (),
    ) -> None:
        self.data = SalesforceData(
            records,
            seed,
            days=days,
            end=end,
            invalid_emails=invalid_emails,
            custom_fields=custom_fields,
            long_text_fields=long_text_fields,
            extra_objects=extra_objects,
        )
        self._clock_offset = 0.0
        self.data.clock = lambda: time.time() + self._clock_offset
        self.bus = EventBus(self.data, cdc_objects)
        self._pubsub: PubSubServer | None = None
        self.render_cache = RenderCache(render_cache, self.data) if render_cache is not None else None
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
        self._job_outcomes: list[str] = []  # states forced on the next jobs created
        self.bulk_unsupported: set[str] = set()
        self._serial = 0
        self._server: _Server | None = None
        self._proxy: ConnectProxy | None = None
        self._thread: threading.Thread | None = None
        self.ca_file: Path | None = None
        self.sessions = sf_login.Sessions(self.session_id)
        self.login_rate = sf_login.LoginRate(logins_per_hour)
        self.connected_app = sf_login.ConnectedApp(self.consumer_key, self.consumer_secret)
        self._private_key_file: Path | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> SalesforceSandbox:
        files = tls.generate(self.workdir / "tls", ("127.0.0.1", "localhost", *LOGIN_HOSTS))
        self.ca_file = files.ca_file
        self._server = _Server(("127.0.0.1", self.port), _Handler, files.server_context, self)
        self.port = self._server.server_address[1]
        self._proxy = ConnectProxy(("127.0.0.1", self.port)).start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="sf-sandbox", daemon=True
        )
        self._thread.start()
        service = PubSubService(self.bus, self.org_id, self._pubsub_authorized)
        self._pubsub = PubSubServer(service, files.grpc_credentials).start()
        return self

    def stop(self) -> None:
        if self._pubsub is not None:
            self._pubsub.stop()
            self._pubsub = None
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
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

    @property
    def org_id(self) -> str:
        """The org's 18-character Id: a session id starts with the 15-character one."""
        return org_id_of_session(self.session_id)

    @property
    def pubsub_endpoint(self) -> str:
        """``host:port`` of the Pub/Sub API (gRPC over TLS, the same CA)."""
        assert self._pubsub is not None, "start the sandbox first"
        return self._pubsub.endpoint

    def _pubsub_authorized(self, metadata: dict[str, str]) -> bool:
        return (
            self.sessions.valid(metadata.get("accesstoken", ""))
            and metadata.get("instanceurl") == self.url
            and metadata.get("tenantid") == self.org_id
        )

    def env(self) -> dict[str, str]:
        """The CONTRACT.md variables that point a client at this sandbox."""
        return {
            "SALESFORCE_INSTANCE_URL": self.url,
            "SALESFORCE_SESSION_ID": self.session_id,
            "SALESFORCE_CA_BUNDLE": str(self.ca_file),
            "SALESFORCE_PUBSUB_ENDPOINT": self.pubsub_endpoint,
        }

    def password_env(self, domain: str = "login") -> dict[str, str]:
        """The password-login variables, and the proxy that brings ``<domain>.salesforce.com`` here."""
        return {
            "SALESFORCE_USERNAME": self.username,
            "SALESFORCE_PASSWORD": self.password,
            "SALESFORCE_SECURITY_TOKEN": self.security_token,
            "SALESFORCE_DOMAIN": domain,
            **self._login_host_env(),
        }

    def jwt_env(self, domain: str = "login") -> dict[str, str]:
        """The OAuth 2.0 JWT bearer variables. The first call makes the connected app's key pair (in
        the workdir) and uploads its certificate here, as an admin would in Setup."""
        if self._private_key_file is None:
            key_file, cert_file = sf_login.connected_app_keys(self.workdir / "connected-app")
            self.register_certificate(cert_file.read_bytes())
            self._private_key_file = key_file
        return {
            "SALESFORCE_CONSUMER_KEY": self.consumer_key,
            "SALESFORCE_PRIVATE_KEY_FILE": str(self._private_key_file),
            "SALESFORCE_USERNAME": self.username,
            "SALESFORCE_DOMAIN": domain,
            **self._login_host_env(),
        }

    def client_credentials_env(self) -> dict[str, str]:
        """The OAuth 2.0 client credentials variables (the flow needs the org's My Domain)."""
        return {
            "SALESFORCE_CONSUMER_KEY": self.consumer_key,
            "SALESFORCE_CONSUMER_SECRET": self.consumer_secret,
            "SALESFORCE_DOMAIN": self.my_domain,
            **self._login_host_env(),
        }

    def _login_host_env(self) -> dict[str, str]:
        assert self._proxy is not None, "start the sandbox first"
        return {"SALESFORCE_CA_BUNDLE": str(self.ca_file), "HTTPS_PROXY": self._proxy.url}

    def register_certificate(self, pem: bytes) -> None:
        """The certificate (PEM) whose key signs JWT bearer assertions for the connected app."""
        certificate = x509.load_pem_x509_certificate(pem)
        self.connected_app = sf_login.ConnectedApp(self.consumer_key, self.consumer_secret, certificate)

    def expire_sessions(self) -> int:
        """Expire every session (as the org's session timeout does); returns how many there were."""
        return self.sessions.expire_all()

    def set_login_limit(self, per_hour: int) -> None:
        """Logins a user may make per hour before LOGIN_RATE_EXCEEDED (Salesforce: 3,600)."""
        self.login_rate.per_hour = per_hour

    # ------------------------------------------------------------------- in-process admin API

    def get(self, obj: str, record_id: str) -> dict[str, Any]:
        return self.data.get(obj, record_id)

    def update(
        self, obj: str, record_id: str, fields: dict[str, Any], *, modstamp: str | None = None
    ) -> dict[str, Any]:
        """An edit; ``modstamp`` (past) commits it late, with that SystemModstamp (see SalesforceData)."""
        return self.data.update(obj, record_id, fields, modstamp=modstamp)

    def delete(self, obj: str, record_id: str, *, hard: bool = False, modstamp: str | None = None) -> None:
        self.data.delete(obj, record_id, hard=hard, modstamp=modstamp)

    def create(self, obj: str, fields: dict[str, Any]) -> str:
        return self.data.create(obj, fields)

    def undelete(self, obj: str, record_id: str) -> dict[str, Any]:
        return self.data.undelete(obj, record_id)

    def advance_clock(self, seconds: float) -> None:
        """Move the org's clock forward (SystemModstamps of later edits, event retention)."""
        self._clock_offset += seconds

    def select_for_cdc(self, objects: Sequence[str]) -> None:
        """The objects whose changes are published (Setup > Change Data Capture)."""
        with self.bus.changed:
            self.bus.enabled = set(objects)

    def set_delivery_allocation(self, remaining: int | None) -> None:
        """Events that may still be delivered in the 24 h window (None: no limit)."""
        with self.bus.changed:
            self.bus.allocation = None if remaining is None else self.bus.delivered + remaining

    def inject_fault(
        self,
        status: int | None = None,
        count: int = 1,
        *,
        drop: int = 0,
        delay: float = 0.0,
        match: str | None = None,
        expire: int = 0,
    ) -> None:
        """The next ``count`` API requests (whose path contains ``match``) answer ``status``, or sleep
        ``delay`` seconds first; ``drop=N`` cuts the next N responses off halfway instead;
        ``expire=N`` expires every session just before each of the next N such requests. On a login
        path (``/services/oauth2/token``, ``/services/Soap/u/``) a status is an HTML error page."""
        with self._lock:
            if expire:
                self._faults.append(Fault("expire", expire, match=match))
            if status is not None:
                self._faults.append(Fault("status", count, status=status, match=match))
            if delay:
                self._faults.append(Fault("delay", count, delay=delay, match=match))
            if drop:
                self._faults.append(Fault("drop", drop, match=match))

    def fail_bulk_jobs(self, state: str = "Failed", count: int = 1) -> None:
        """The next ``count`` Bulk query jobs end in ``state`` (``Failed`` or ``Aborted``)."""
        if state not in ("Failed", "Aborted"):
            raise ValueError(f"a job ends Failed or Aborted, not {state}")
        with self._lock:
            self._job_outcomes += [state] * count

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
                "proxy_tunnels": self._proxy.tunnels if self._proxy else 0,
                "logins_this_hour": self.login_rate.count(self.username),
                "render_cache": dict(self.render_cache.stats) if self.render_cache else None,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._statuses.clear()
            if self.render_cache is not None:
                self.render_cache.stats.clear()

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

    def _count(self, endpoint: str) -> None:
        """Count a request that the daily budget does not charge (a login)."""
        with self._lock:
            self._requests[endpoint] += 1

    def _charge(self, endpoint: str) -> None:
        """Count a request against the daily budget; refuse it once the budget is spent."""
        self._count(endpoint)
        with self._lock:
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

    def _render(
        self, obj: str, rendering: tuple[Any, ...], records: Sequence[Any], render: Callable[[Any], bytes]
    ) -> list[bytes]:
        if self.render_cache is None:
            return [render(record) for record in records]
        return self.render_cache.fragments(obj, self._cache_key(obj, rendering), records, render)

    def _cache_key(self, obj: str, rendering: tuple[Any, ...]) -> tuple[Any, ...]:
        """A rendering, plus the writes to what the object's cross-object formulas read."""
        return (*rendering, self.data.formula_inputs(obj))

    def _rest_rendering(
        self, obj: str, fields: list[str], version: str
    ) -> tuple[tuple[Any, ...], Callable[[Any], bytes]]:
        def render(record: Any) -> bytes:
            return json.dumps(self.rest_record(obj, record, fields, version), ensure_ascii=False).encode()

        return ("json", tuple(fields), version), render

    @staticmethod
    def _csv_rendering(
        fields: list[str], delimiter: str, line_ending: str
    ) -> tuple[tuple[Any, ...], Callable[[Any], bytes]]:
        """Bulk 2.0 CSV: the render-cache key and a fresh renderer (``delimiter`` as in DELIMITERS)."""
        terminator = "\r\n" if line_ending == "CRLF" else "\n"
        rendering = ("csv", tuple(fields), DELIMITERS[delimiter], terminator)
        return rendering, csv_renderer(fields, DELIMITERS[delimiter], terminator)

    def warm(
        self,
        query: str,
        *,
        bulk: bool,
        include_deleted: bool = True,
        version: str = "59.0",
        delimiter: str = "COMMA",
        line_ending: str = "LF",
    ) -> int:
        """Render every base record ``query`` matches into the render cache, as REST JSON for API
        ``version`` or (``bulk``) as Bulk 2.0 CSV; returns the blocks rendered now (0: already warm)."""
        if self.render_cache is None:
            raise ValueError("this sandbox has no render cache")
        parsed, results = self._run(query, include_deleted)
        indexes = [
            r.index
            for offset in range(0, results.total, BULK_PAGE)
            for r in results.page(offset, BULK_PAGE)
            if isinstance(r, LazyRecord)
        ]
        if bulk:
            rendering, render = self._csv_rendering(parsed.fields, delimiter, line_ending)
        else:
            rendering, render = self._rest_rendering(parsed.sobject, parsed.fields, version)
        return self.render_cache.warm(
            parsed.sobject, self._cache_key(parsed.sobject, rendering), indexes, render
        )

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
    ) -> bytes:
        """The JSON body of one REST page, as ``json.dumps(page, ensure_ascii=False)`` would write it,
        assembled from one rendered fragment per record."""
        records = results.page(offset, batch)
        done = offset + len(records) >= results.total
        page: dict[str, Any] = {"totalSize": results.total, "done": done}
        if not done:
            page["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{locator}-{offset + len(records)}"
        rendering, render = self._rest_rendering(obj, results.fields, version)
        fragments = self._render(obj, rendering, records, render)
        head = json.dumps(page, ensure_ascii=False).encode()[:-1]  # "records" is the last key
        return b"".join((head, b', "records": [', b", ".join(fragments), b"]}"))

    def start_query(
        self, text: str, include_deleted: bool, batch: int, version: str
    ) -> dict[str, Any] | bytes:
        query, results = self._run(text, include_deleted)
        if query.is_count:
            return {"totalSize": results.total, "done": True, "records": []}
        if query.is_aggregate:
            return self._aggregate_page(query, include_deleted)
        locator = make_id("01g", self._next_serial())
        with self._lock:
            self._cursors[locator] = results
            while len(self._cursors) > 500:  # Salesforce also lets old cursors expire
                self._cursors.popitem(last=False)
        endpoint = "queryAll" if include_deleted else "query"
        return self.query_page(locator, results, 0, batch, version, endpoint, query.sobject)

    def _aggregate_page(self, query: soql.Query, include_deleted: bool) -> dict[str, Any]:
        """An aggregate query's one page: its groups, LIMIT and OFFSET applied to them; more than
        2,000 groups is refused (aggregate results have no queryMore)."""
        everything = self.data.execute(dataclasses.replace(query, limit=None, offset=0), include_deleted)
        groups = soql.aggregate(query, everything.records())
        stop = None if query.limit is None else query.offset + query.limit
        groups = groups[query.offset : stop]
        if len(groups) > AGGREGATE_ROWS:
            raise ApiError(
                400,
                "MALFORMED_QUERY",
                "Aggregate query does not support queryMore(), use LIMIT to restrict the results to a "
                "single batch",
            )
        return {"totalSize": len(groups), "done": True, "records": groups}

    def query_more(self, locator: str, offset: int, batch: int, version: str, endpoint: str) -> bytes:
        with self._lock:
            results = self._cursors.get(locator)
        if results is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self.query_page(locator, results, offset, batch, version, endpoint, results.sobject)

    # ------------------------------------------------------------------------- getDeleted

    def get_deleted(self, obj: str, start: str | None, end: str | None) -> dict[str, Any]:
        """``GET sobjects/<Object>/deleted/?start=&end=``: the delete log, whole minutes (seconds are
        ignored), ``start`` at most 30 days back and more than a minute before ``end``."""
        if not start or not end:
            raise ApiError(400, "MISSING_ARGUMENT", "Both start and end must be specified")
        try:
            start_ms, end_ms = (parse_datetime(value) // MINUTE_MS * MINUTE_MS for value in (start, end))
        except ValueError as exc:
            raise ApiError(400, "INVALID_REPLICATION_DATE", f"Invalid date: {exc}") from exc
        now_ms = int(self.data.clock() * 1000)
        if start_ms < now_ms - REPLICATION_DAYS * DAY_MS:
            raise ApiError(
                400, "INVALID_REPLICATION_DATE", f"startDate cannot be more than {REPLICATION_DAYS} days ago"
            )
        if end_ms - start_ms <= MINUTE_MS:
            raise ApiError(
                400,
                "INVALID_REPLICATION_DATE",
                "startDate must chronologically precede endDate by more than one minute",
            )
        covered = min(end_ms, now_ms // MINUTE_MS * MINUTE_MS)
        earliest = (now_ms - REPLICATION_DAYS * DAY_MS) // MINUTE_MS * MINUTE_MS
        return {
            "deletedRecords": [
                {"id": record_id, "deletedDate": format_datetime(ms)}
                for record_id, ms in self.data.deleted(obj, start_ms, covered)
            ],
            "earliestDateAvailable": format_datetime(earliest),
            "latestDateCovered": format_datetime(covered),
        }

    # ---------------------------------------------------------------------------- Bulk 2.0

    def create_job(self, payload: dict[str, Any], version: str) -> BulkJob:
        operation = payload.get("operation")
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "API_ERROR", f"Invalid operation: {operation}")
        query, results = self._run(str(payload.get("query") or ""), operation == "queryAll")
        if query.is_count or query.is_aggregate:
            raise ApiError(400, "API_ERROR", "Aggregate Relationships not supported in Bulk Query")
        types = self.data.fields[query.sobject]
        if any(types[name].type in ("address", "location") for name in query.fields):
            raise ApiError(400, "API_ERROR", "Selecting compound data not supported in Bulk Query")
        if query.sobject in self.bulk_unsupported:
            message = f"Entity '{query.sobject}' is not supported by the Bulk API."
            raise ApiError(400, "INVALIDENTITY", message)
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
            if self._job_outcomes:
                job.outcome = self._job_outcomes.pop(0)
            self._jobs[job.id] = job
        return job

    def job(self, job_id: str) -> BulkJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise _not_found()
        if job.state in ("UploadComplete", "InProgress"):
            done = time.time() - job.created >= self.bulk_processing_seconds
            job.state = job.outcome if done else "InProgress"
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
        if job.state == "Failed":
            info["errorMessage"] = "InternalServerError : the query job failed while processing; retry it"
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


# Subrequests inherit these from the top-level Composite request; naming one fails the request.
INHERITED_HEADERS = frozenset({"accept", "authorization", "content-type"})
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_REFERENCE_STEP = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]")


def _batch_size(options: str) -> int:
    """The page size a ``Sforce-Query-Options: batchSize=N`` header asks for, within 200..2,000."""
    match = re.search(r"batchSize=(\d+)", options)
    return min(max(int(match.group(1)), 200), REST_PAGE) if match else REST_PAGE


@dataclass
class _SubResponse:
    """A Composite subrequest's answer: its status and body (a query page stays the JSON bytes it was
    rendered as, parsed only when a later subrequest references it)."""

    status: int
    body: Any
    _parsed: Any = None

    def json(self) -> Any:
        if not isinstance(self.body, bytes):
            return self.body
        if self._parsed is None:
            self._parsed = json.loads(self.body)
        return self._parsed

    def encode(self, reference: str) -> bytes:
        body = (
            self.body if isinstance(self.body, bytes) else json.dumps(self.body, ensure_ascii=False).encode()
        )
        tail = json.dumps({"httpHeaders": {}, "httpStatusCode": self.status, "referenceId": reference})
        return b'{"body": ' + body + b", " + tail[1:].encode()


def _is_query_operation(url: str) -> bool:
    """Whether Salesforce counts the subrequest among the 5 query operations of a Composite call:
    query, queryAll, or a next page ("query more", also when its url is a reference to an earlier
    page's ``nextRecordsUrl``)."""
    if any(path.endswith(".nextRecordsUrl") for _, path in _REFERENCE.findall(url)):
        return True
    match = _VERSION_PATH.match(unquote(urlsplit(url).path))
    return match is not None and (match.group(2) or "/").strip("/").split("/")[0] in ("query", "queryAll")


def _resolve_references(url: str, answered: dict[str, _SubResponse]) -> str:
    """``url`` with each ``@{refId.field...}`` replaced by that value of an earlier subrequest's body.

    A reference to a subrequest that failed, or to a field that is missing or null, fails this
    subrequest with 400 PROCESSING_HALTED: our best reading of Salesforce's wording ("Dependent
    subrequests aren't executed"; its message names the reference it could not resolve).
    """

    def value(match: re.Match[str]) -> str:
        reference, path = match.group(1), match.group(2)
        answer = answered.get(reference)
        found: Any = answer.json() if answer is not None and answer.status < 300 else None
        for name, index in _REFERENCE_STEP.findall(path):
            if name and isinstance(found, dict):
                found = found.get(name)
            elif index and isinstance(found, list) and int(index) < len(found):
                found = found[int(index)]
            else:
                found = None
        if found is None or isinstance(found, (dict, list)):
            raise ApiError(
                400,
                "PROCESSING_HALTED",
                f"Invalid reference specified. No value for {reference}{path} found in {reference}.",
            )
        return str(found).lower() if isinstance(found, bool) else str(found)

    return _REFERENCE.sub(value, url)


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
_SOAP_PATH = re.compile(r"^/services/Soap/u/(\d+\.\d)/?$")
_SOAP_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
    'xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    "<soapenv:Body>{}</soapenv:Body></soapenv:Envelope>"
)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _soap_login_result(server_url: str, session_id: str) -> bytes:
    result = (
        f"<loginResponse><result><passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
        f"<serverUrl>{escape(server_url)}</serverUrl><sessionId>{escape(session_id)}</sessionId>"
        f"<userId>005Dn000000SANDBOX</userId></result></loginResponse>"
    )
    return _SOAP_ENVELOPE.format(result).encode()


def _soap_fault(code: str, message: str, fault_type: str = "LoginFault") -> bytes:
    fault = (
        f"<soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}"
        f'</faultstring><detail><sf:{fault_type} xsi:type="sf:{fault_type}"><sf:exceptionCode>{code}'
        f"</sf:exceptionCode><sf:exceptionMessage>{escape(message)}</sf:exceptionMessage></sf:{fault_type}>"
        f"</detail></soapenv:Fault>"
    )
    return _SOAP_ENVELOPE.format(fault).encode()


def _unavailable_page(status: int) -> bytes:
    """What a login host serves during maintenance or overload: an HTML page, not an API error."""
    title = {503: "Service Unavailable"}.get(status, "Error")
    return (
        f"<!DOCTYPE html><html><head><meta charset=utf-8><title>{status} {title}</title></head><body>"
        f"<h1>{title}</h1><p>The server is temporarily unable to service your request. Please try again "
        "later.<br>salesforce.com</body></html>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _in_composite = False
    _body_read = False
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
        self._body_read = True
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
        self._body_read = False
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
            elif method == "POST" and (soap := _SOAP_PATH.match(path)):
                self._soap_login(path, soap.group(1))
            elif method == "POST" and path.rstrip("/") == "/services/oauth2/token":
                self._oauth_token(path)
            elif path.startswith("/services/"):
                self._api(method, path, params)
            else:
                raise _not_found()
        except ApiError as exc:
            if method in ("POST", "PATCH") and not self._body_read:
                # Refused before its body was read (e.g. 401): drain it, or the next request on this
                # keep-alive connection would be parsed from the middle of it.
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = self._limit_headers() if path.startswith("/services/") else None
            self._json(exc.status, [{"message": exc.message, "errorCode": exc.error_code}], headers)
        except DataError as exc:
            self._json(exc.status, [{"message": exc.message, "errorCode": exc.error_code, "fields": []}])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    # ----------------------------------------------------------------------------- SOAP login

    def _soap_login(self, path: str, version: str) -> None:
        """The partner API's `login`: free (logins do not count against the API budget)."""
        sandbox = self.sandbox
        sandbox._count("login")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self._login_fault(path):
            return
        if not sf_login.soap_login_available(version):
            message = (
                f"The SOAP Login operation is not available in the API version specified ({version}). "
                "Refer to the documentation for supported versions."
            )
            self._soap(500, _soap_fault("INVALID_OPERATION", message, "UnexpectedErrorFault"))
            return
        try:
            envelope = ElementTree.fromstring(body)
            fields = {_local(element.tag): (element.text or "") for element in envelope.iter()}
        except ElementTree.ParseError:
            fields = {}
        if fields.get("username") != sandbox.username or fields.get("password") != (
            sandbox.password + sandbox.security_token
        ):
            message = "Invalid username, password, security token; or user locked out."
            self._soap(500, _soap_fault("INVALID_LOGIN", message))
            return
        try:
            sandbox.login_rate.admit(sandbox.username)
        except sf_login.LoginRateExceeded:
            self._soap(500, _soap_fault("LOGIN_RATE_EXCEEDED", "Login rate exceeded."))
            return
        session_id = sandbox.sessions.issue()
        server_url = f"{sandbox.url}/services/Soap/u/{version}/{sf_login.ORG_ID}"
        self._soap(200, _soap_login_result(server_url, session_id))

    def _soap(self, status: int, body: bytes) -> None:
        self._send(status, body, "text/xml; charset=utf-8")

    def _oauth_token(self, path: str) -> None:
        """``/services/oauth2/token``: the JWT bearer and client credentials grants."""
        sandbox = self.sandbox
        sandbox._count("oauth2.token")
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode(errors="replace")).items()}
        if self._login_fault(path):
            return
        host = self.headers.get("Host", "").rpartition(":")[0] or self.headers.get("Host", "")
        grant = form.get("grant_type", "")
        try:
            if grant == sf_login.JWT_BEARER:
                sf_login.check_jwt_bearer(form, host, sandbox.connected_app, sandbox.username)
            elif grant == sf_login.CLIENT_CREDENTIALS:
                authorization = self.headers.get("Authorization", "")
                sf_login.check_client_credentials(authorization, form, host, sandbox.connected_app)
            else:
                raise sf_login.OAuthError("unsupported_grant_type", "grant type not supported")
            try:
                sandbox.login_rate.admit(sandbox.username)
            except sf_login.LoginRateExceeded as exc:
                raise sf_login.OAuthError("rate_limit_exceeded", "Number of logins exceeded") from exc
        except sf_login.OAuthError as exc:
            self._json(exc.status, exc.body(), {"Cache-Control": "no-store"})
            return
        body = sf_login.token_response(grant, sandbox.sessions.issue(), sandbox.url, host)
        self._json(200, body, {"Cache-Control": "no-store"})

    def _login_fault(self, path: str) -> bool:
        """An injected fault on a login host: a delay, or an HTML error page (True: answered)."""
        fault = self.sandbox._take_fault(path)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)
        elif fault is not None and fault.kind == "status":
            self._send(fault.status, _unavailable_page(fault.status), "text/html;charset=UTF-8")
            return True
        return False

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

        if fault is not None and fault.kind == "expire":
            sandbox.expire_sessions()
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme not in ("Bearer", "OAuth") or not sandbox.sessions.valid(token.strip()):
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
        if method == "POST" and rest == "/composite":
            self._charge("composite")
            self._send(200, self._composite(self._body()), headers=self._limit_headers(), drop=drop)
            return
        if method != "GET":
            self._charge("unsupported")
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET")
        payload = self._get(parts, params, version, _batch_size(self.headers.get("Sforce-Query-Options", "")))
        if isinstance(payload, bytes):  # a query page, already JSON
            self._send(200, payload, headers=self._limit_headers(), drop=drop)
        else:
            self._json(200, payload, self._limit_headers(), drop=drop)

    def _charge(self, endpoint: str) -> None:
        """Charge a request to the daily budget; a Composite subrequest is only counted (the whole
        series counts as one call)."""
        if self._in_composite:
            self.sandbox._count(f"composite:{endpoint}")
        else:
            self.sandbox._charge(endpoint)

    def _get(self, parts: list[str], params: dict[str, str], version: str, batch: int) -> Any:
        """The payload of a GET below ``/services/data/vNN.0``: a dict, or a query page's JSON bytes."""
        sandbox = self.sandbox
        head = parts[0]
        if head in ("query", "queryAll") and len(parts) == 1:
            self._charge(head)
            if "q" not in params:
                raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
            return sandbox.start_query(params["q"], head == "queryAll", batch, version)
        if head in ("query", "queryAll") and len(parts) == 2:
            self._charge("queryMore")
            locator, _, offset = parts[1].rpartition("-")
            if not locator or not offset.isdigit():
                raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            return sandbox.query_more(locator, int(offset), batch, version, head)
        if head == "limits":
            self._charge("limits")
            return self._limits()
        if head == "sobjects":
            return self._sobjects(parts[1:], version, params)
        if parts == [""]:
            self._charge("resources")
            return {
                name: f"/services/data/v{version}/{name}"
                for name in ("sobjects", "query", "queryAll", "limits", "jobs", "composite")
            }
        self._charge("unknown")
        raise _not_found()

    def _composite(self, body: Any) -> bytes:
        """``POST /composite`` (allOrNone false): up to 25 GET subrequests answered in order, at most 5
        of them query operations (query, queryAll and their "query more" pages). A subrequest's url may
        hold references ``@{refId.field}`` (``.name`` and ``[i]`` steps) to the JSON body of an earlier
        one; a failed one answers its own error, and so does one whose reference cannot be resolved."""
        subrequests = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subrequests, list) or not subrequests:
            raise ApiError(400, "JSON_PARSER_ERROR", "compositeRequest is required")
        for sub in subrequests:
            if not isinstance(sub, dict) or not sub.get("referenceId"):
                raise ApiError(400, "JSON_PARSER_ERROR", "'referenceId' is a required field.")
            headers = sub.get("httpHeaders") or {}
            if not isinstance(headers, dict) or {str(h).lower() for h in headers} & INHERITED_HEADERS:
                # Salesforce: the subrequests inherit these from the top-level request, and naming one
                # fails the whole request with a 400.
                raise ApiError(
                    400,
                    "INVALID_BATCH_REQUEST",
                    "httpHeaders may not set Accept, Authorization or Content-Type",
                )
        queries = sum(_is_query_operation(str(sub.get("url", ""))) for sub in subrequests)
        if len(subrequests) > COMPOSITE_LIMIT or queries > COMPOSITE_QUERIES:
            raise ApiError(
                400,
                "INVALID_BATCH_REQUEST",
                f"A composite request holds at most {COMPOSITE_LIMIT} subrequests, {COMPOSITE_QUERIES} "
                "of them query operations",
            )
        answered: dict[str, _SubResponse] = {}
        parts = []
        self._in_composite = True
        try:
            for sub in subrequests:
                answer = self._subrequest(sub, answered)
                answered[str(sub["referenceId"])] = answer
                parts.append(answer.encode(str(sub["referenceId"])))
        finally:
            self._in_composite = False
        return b'{"compositeResponse": [' + b", ".join(parts) + b"]}"

    def _subrequest(self, sub: dict[str, Any], answered: dict[str, _SubResponse]) -> _SubResponse:
        try:
            url = urlsplit(_resolve_references(str(sub.get("url", "")), answered))
            match = _VERSION_PATH.match(unquote(url.path))
            if sub.get("method") != "GET" or match is None or match.group(1) not in VERSIONS:
                raise ApiError(400, "INVALID_BATCH_REQUEST", f"unsupported subrequest {sub.get('url')}")
            parts = (match.group(2) or "/").strip("/").split("/")
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            options = {str(k).lower(): str(v) for k, v in (sub.get("httpHeaders") or {}).items()}
            batch = _batch_size(options.get("sforce-query-options", ""))
            payload = self._get(parts, params, match.group(1), batch)
        except (ApiError, DataError) as exc:
            return _SubResponse(exc.status, [{"errorCode": exc.error_code, "message": exc.message}])
        return _SubResponse(200, payload)

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

    def _sobjects(self, parts: list[str], version: str, params: dict[str, str]) -> Any:
        data = self.sandbox.data
        if not parts:
            self._charge("describeGlobal")
            return {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [describe_global_entry(o, version) for o in data.sobjects.values()],
            }
        sobject = data.sobject(parts[0])
        if len(parts) == 2 and parts[1] == "describe":
            self._charge("describe")
            if sobject is None:
                raise _not_found()
            return describe_sobject(sobject, version)
        if len(parts) == 2 and parts[1] == "deleted":
            self._charge("getDeleted")
            if sobject is None:
                raise _not_found()
            return self.sandbox.get_deleted(sobject.name, params.get("start"), params.get("end"))
        self._charge("sobject")
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
        rendering, render = self.sandbox._csv_rendering(job.fields, job.delimiter, job.line_ending)
        lines = self.sandbox._render(job.sobject, rendering, records, render)
        header = render(dict(zip(job.fields, job.fields, strict=True)))
        for start in range(0, max(len(records), 1), CSV_CHUNK):
            chunk = b"".join([header] * (start == 0) + lines[start : start + CSV_CHUNK])
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
            return 200, sandbox.update(parts[1], parts[2], self._body(), modstamp=params.get("modstamp"))
        if route[:2] == ("DELETE", "records") and len(parts) == 3:
            sandbox.delete(
                parts[1], parts[2], hard=params.get("hard") == "true", modstamp=params.get("modstamp")
            )
            return 200, {"id": parts[2], "success": True, "errors": []}
        if route == ("POST", "records", 4) and parts[3] == "undelete":
            return 200, sandbox.undelete(parts[1], parts[2])
        if route == ("GET", "cdc", 1):
            return 200, describe(sandbox.bus)
        if route == ("POST", "cdc", 1):
            body = self._body()
            if "enabled" in body:
                sandbox.select_for_cdc(body["enabled"])
            if "allocation" in body:
                sandbox.set_delivery_allocation(body["allocation"])
            return 200, describe(sandbox.bus)
        if route == ("POST", "cdc", 2) and parts[1] == "gap":
            body = self._body()
            sandbox.bus.publish_gap(body["object"], body["ids"], body.get("change_type", "GAP_UPDATE"))
            return 200, describe(sandbox.bus)
        if route == ("POST", "cdc", 2) and parts[1] == "overflow":
            sandbox.bus.publish_overflow(self._body()["object"])
            return 200, describe(sandbox.bus)
        if route == ("POST", "clock", 1):
            sandbox.advance_clock(float(self._body()["advance"]))
            return 200, {"now": format_datetime(int(sandbox.data.clock() * 1000))}
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
                expire=int(body.get("expire", 0)),
            )
            return 200, sandbox.stats()
        if route == ("DELETE", "sessions", 1):
            return 200, {"expired": sandbox.expire_sessions()}
        if route == ("POST", "logins", 1):
            sandbox.set_login_limit(int(self._body()["per_hour"]))
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
