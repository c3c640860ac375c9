"""Rate limiting, latency, injected faults and statistics for the sandbox Notion server.

Time model: the sandbox runs a *virtual clock* that advances ``speed`` times faster than real
time. Everything Notion would express in seconds (token refill, ``Retry-After``, latency) is
computed on the virtual clock, so a client that divides its waits by ``NOTION_TIME_SCALE``
observes exactly Notion's behaviour, only ``speed`` times quicker.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

# Notion's 429 ``additional_data.rate_limit_reason`` values.
CONNECTION_LIMIT = "public_api_request_rate_limit"
WORKSPACE_LIMIT = "public_api_space_request_rate_limit"
ENDPOINT_LIMIT = "public_api_endpoint_rate_limit"
REQUEST_BLOCKED = "public_api_request_blocked"


class VirtualClock:
    """Monotonic clock running ``speed`` times faster than real time; the speed can change live."""

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._real_anchor = time.monotonic()
        self._virtual_anchor = 0.0
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        with self._lock:
            self._virtual_anchor = self.now()
            self._real_anchor = time.monotonic()
            self._speed = float(speed)

    def now(self) -> float:
        """Virtual seconds since the clock was created."""
        return self._virtual_anchor + (time.monotonic() - self._real_anchor) * self._speed


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per token and (optionally) one shared by the workspace, on the virtual clock.

    A request is admitted only if *both* buckets hold a whole token, and then both are debited
    under one lock, so the count of admitted requests is exact whatever the concurrency.
    """

    def __init__(
        self,
        clock: VirtualClock,
        rps: float,
        burst: int,
        workspace_rps: float | None,
        workspace_retry_after: int = 0,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.rps = float(rps)
        self.burst = int(burst)
        self.workspace_rps = workspace_rps
        # Notion's workspace limit can answer a Retry-After of minutes: at least this many (virtual) s.
        self.workspace_retry_after = int(workspace_retry_after)
        self._buckets: dict[str, _Bucket] = {}
        self._workspace = _Bucket(float(burst), clock.now())

    def configure(self, rps: float | None = None, burst: int | None = None) -> None:
        with self._lock:
            now = self._clock.now()
            # Settle the tokens earned at the old rate before switching.
            for bucket in self._buckets.values():
                self._refill(bucket, now, self.rps)
            self._refill(self._workspace, now, self.workspace_rps or 0.0)
            if rps is not None:
                self.rps = float(rps)
            if burst is not None:
                self.burst = int(burst)
                for bucket in [*self._buckets.values(), self._workspace]:
                    bucket.tokens = min(bucket.tokens, self.burst)

    def reset(self) -> None:
        """Refill every bucket (used by ``POST /_sandbox/reset``)."""
        with self._lock:
            self._buckets.clear()
            self._workspace = _Bucket(float(self.burst), self._clock.now())

    def _refill(self, bucket: _Bucket, now: float, rps: float) -> None:
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rps)
        bucket.updated = now

    def acquire(self, token: str) -> tuple[bool, str, int]:
        """Try to spend one token. Returns ``(admitted, rate_limit_reason, retry_after_virtual_s)``."""
        with self._lock:
            now = self._clock.now()
            bucket = self._buckets.setdefault(token, _Bucket(float(self.burst), now))
            self._refill(bucket, now, self.rps)
            if bucket.tokens < 1.0:
                return False, CONNECTION_LIMIT, self._retry_after(bucket, self.rps)
            if self.workspace_rps is not None:
                self._refill(self._workspace, now, self.workspace_rps)
                if self._workspace.tokens < 1.0:
                    wait = max(
                        self.workspace_retry_after, self._retry_after(self._workspace, self.workspace_rps)
                    )
                    return False, WORKSPACE_LIMIT, wait
                self._workspace.tokens -= 1.0
            bucket.tokens -= 1.0
            return True, "", 0

    @staticmethod
    def _retry_after(bucket: _Bucket, rps: float) -> int:
        """Whole virtual seconds until a token is available (Notion sends an integer, at least 1)."""
        wait = (1.0 - bucket.tokens) / rps if rps > 0 else 60.0
        return max(1, math.ceil(wait - 1e-9))


@dataclass
class Fault:
    """One injected fault rule; consumed by the next ``count`` matching requests."""

    count: int
    status: int | None = None  # HTTP status to answer with; None for a timeout
    timeout_s: float | None = None  # real seconds to stall; None with status None = hang until stop
    path_prefix: str | None = None
    method: str | None = None
    apply_write: bool = False  # process the request for real, then answer with the fault anyway
    retry_after: int | None = None  # virtual seconds, for 429/529/503
    reason: str | None = None  # 429: additional_data.rate_limit_reason (default: the connection limit)
    committed: bool = False  # 503 after applying the write: additional_data says so (retry_guidance, id)
    after: int = 0  # matching requests let through before the fault starts (e.g. fail from day 17 on)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not (self.path_prefix and not path.startswith(self.path_prefix))

    def describe(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """FIFO of fault rules; the first rule matching a request is consumed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._faults]

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None


class WriteConflicts:
    """Concurrent writes to one data source: a write arriving while another to the same data source
    is in flight answers 409 ``conflict_error`` (nothing written) with probability ``rate``, as
    Notion's transactions do under concurrent writers. Notion publishes no rate: 0 unless set."""

    def __init__(self, rate: float = 0.0) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()

    @contextmanager
    def writing(self, key: str | None) -> Iterator[bool]:
        """Hold a write to ``key`` (a data source id; None: not a page write) for the block; yields
        whether it conflicts with one already in flight."""
        if key is None:
            yield False
            return
        with self._lock:
            conflict = self._in_flight[key] > 0 and random.random() < self.rate
            self._in_flight[key] += 1
        try:
            yield conflict
        finally:
            with self._lock:
                self._in_flight[key] -= 1


class Latency:
    """Per-request delay in virtual milliseconds with uniform jitter; sleeps real time / speed."""

    def __init__(self, clock: VirtualClock, ms: float, jitter_ms: float) -> None:
        self._clock = clock
        self.ms = ms
        self.jitter_ms = jitter_ms

    def sleep(self) -> None:
        delay = self.ms + (random.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0)
        if delay > 0:
            time.sleep(delay / 1000.0 / self._clock.speed)


@dataclass
class _Counters:
    faults: int = 0
    by_status: Counter[str] = field(default_factory=Counter)  # totals, 429s and admitted derive from it
    by_route: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    body_bytes_max: int = 0  # the largest request body received
    first: tuple[float, float] | None = None  # (real, virtual) time of the first non-429 answer
    last: tuple[float, float] | None = None


class RequestStats:
    """Thread-safe request counters; ``snapshot`` derives the achieved request rates."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._c = _Counters()

    def reset(self) -> None:
        with self._lock:
            self._c = _Counters()

    def record(self, route: str, status: int | str, faulted: bool = False, body_bytes: int = 0) -> None:
        """Count one answer; ``status`` is "timeout" for an injected hang that never answered."""
        stamp = (time.monotonic(), self._clock.now())
        with self._lock:
            c = self._c
            c.body_bytes_max = max(c.body_bytes_max, body_bytes)
            c.by_status[str(status)] += 1
            c.by_route[route][str(status)] += 1
            c.faults += faulted
            if status == 429:
                return
            c.first = c.first or stamp
            c.last = stamp

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            c = self._c
            real_span = virtual_span = 0.0
            if c.first and c.last:
                real_span = c.last[0] - c.first[0]
                virtual_span = c.last[1] - c.first[1]
            total = sum(c.by_status.values())
            rate_limited = c.by_status["429"]
            admitted = total - rate_limited  # non-429 answers, the base of the achieved rate
            # n requests spread over a span define n-1 intervals.
            intervals = max(admitted - 1, 0)
            return {
                "requests_total": total,
                "requests_by_status": dict(c.by_status),
                "requests_by_route": {route: dict(s) for route, s in c.by_route.items()},
                "rate_limited": rate_limited,
                "faults_injected": c.faults,
                "body_bytes_max": c.body_bytes_max,
                "admitted": admitted,
                "span_real_s": real_span,
                "span_virtual_s": virtual_span,
                "achieved_rps_real": intervals / real_span if real_span > 0 else 0.0,
                "achieved_rps_virtual": intervals / virtual_span if virtual_span > 0 else 0.0,
            }
