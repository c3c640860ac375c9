"""A token bucket shared by every process using the same Notion token, with a shared pause and adaptive rate.

Why not pyrate-limiter: its v4 SQLite and Postgres buckets share a sliding-window log of a fixed
``Rate`` across processes, but we also need state that its buckets do not hold: a *pause* that a
429's Retry-After imposes on every worker of every process, and an *adaptive* rate (slow start,
halve on 429, grow back) that all processes agree on. Bolting those onto it would mean a second
shared store beside its own, plus its polling waits; a small token bucket whose whole state is one
row (tokens, last refill, rate, paused_until) updated in one transaction — ``BEGIN IMMEDIATE`` in
SQLite, ``SELECT … FOR UPDATE`` in PostgreSQL — does all of it in ~150 lines, with one pure
function (`bucket_step`) holding the math for both backends.

How a request is paced: `acquire` takes a token in one short transaction, *reserving* a future
slot when the bucket is empty (tokens may go negative), and then sleeps until that slot without
holding any lock and without polling. Each reservation is a numbered *ticket*: its slot follows
from the shared state alone (`ticket_slot`), so a `pause` (or a halving of the rate) moves every
outstanding slot back *in queue order*, and a worker waking at its old slot reads the state once
and sleeps on to its new one. Nothing is sent during a pause, the queue resumes one slot at a time
after it, and a request that was answered 429 queues *behind* the requests already waiting — it
does not jump the queue and meet the next 429 of a storm again and again (FIFO: a storm's 429s are
spread over the workers instead of exhausting one request's retries).

Priority: ``acquire(priority=True)`` (the realtime lane's requests) takes the next free slot ahead of
every waiting normal ticket, behind the priority tickets already waiting; the normal tickets move
back one slot each, in order — the mechanics of a pause, one interval long. The bucket itself is
untouched: every ticket, priority or not, is one token of the same debt, so the total rate and burst
stay as they are. Priority tickets can starve normal ones only if they alone fill the rate; the
realtime lane's volume (a few requests per change) is far from that.

Units: rates are requests per *virtual* second (the configured Notion rate); the bucket refills at
``rate x time_scale`` per real second, so a sandbox sped up K times is matched with
``time_scale=K``. Timestamps in the shared state are real wall-clock seconds (PostgreSQL's clock for
the PostgreSQL backend, so several machines agree); `pause` takes real seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple, Protocol, runtime_checkable

log = logging.getLogger(__name__)

Op = Literal["acquire", "acquire_priority", "pause", "grow", "throttle"]


@runtime_checkable
class RateLimiter(Protocol):
    def acquire(self, priority: bool = False) -> None:
        """Block until a request may be sent; honours any shared pause. ``priority``: ahead of every
        waiting normal request (the realtime lane)."""

    def pause(self, seconds: float, reason: str) -> None:
        """Every worker of every process using this bucket waits until `seconds` (real) have passed."""

    def on_success(self) -> None:
        """A request succeeded (adaptive rate: grow)."""

    def on_throttled(self) -> None:
        """A request was answered 429 (adaptive rate: halve)."""

    def current_rate(self) -> float:
        """The rate in force, requests per (virtual) second."""


@dataclass(frozen=True, slots=True)
class BucketParams:
    """One process's view of the bucket configuration (rates in requests per virtual second)."""

    rate: float  # the configured (maximum) rate
    burst: float = 2.0  # tokens the bucket holds when idle; small, so the server's own burst is never used up
    time_scale: float = 1.0  # sandbox speed factor: real refill = rate x time_scale
    start_fraction: float = 0.5  # slow start: a new bucket begins at this share of `rate`
    min_rate: float = 0.5  # halving stops here
    grow_factor: float = 1.1  # multiplied in by every "grow"
    throttle_cooldown: float = 2.0  # virtual seconds: 429s of requests already in flight halve only once

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.time_scale > 0 or not self.burst >= 1:
            raise ValueError(f"rate and time_scale must be > 0 and burst >= 1: {self}")


@dataclass(frozen=True, slots=True)
class BucketState:
    tokens: float  # negative: slots already reserved by sleeping workers
    updated_at: float  # real seconds; in the future while paused (refill resumes when the pause ends)
    rate: float  # adaptive rate in force, requests per virtual second
    paused_until: float = 0.0
    epoch: int = 0  # bumped by every pause (observability: how often the bucket was paused)
    throttled_at: float = 0.0  # when the rate was last halved
    issued: int = 0  # normal tickets handed out so far; the last one is the back of the queue
    priority_issued: int = 0  # priority tickets handed out so far (each moved the waiting normal ones back)
    priority_back: int = 0  # the last priority ticket: the back of the priority queue


def initial_state(now: float, p: BucketParams) -> BucketState:
    return BucketState(tokens=p.burst, updated_at=now, rate=p.rate * p.start_fraction)


class Step(NamedTuple):
    state: BucketState
    wait: float = 0.0  # real seconds to sleep before sending ("acquire" only)
    reserved: bool = False  # "acquire" took a token (a slot `wait` seconds from now)
    ticket: int = 0  # "acquire": the reservation's number, to find its slot again (`ticket_slot`)
    priority: bool = False  # the ticket is a priority one (``ticket_slot(..., priority=True)``)


def _rate(state: BucketState, p: BucketParams) -> float:
    """The adaptive rate in force, clamped to this caller's configuration."""
    return min(max(state.rate, min(p.min_rate, p.rate)), p.rate)


def ticket_slot(state: BucketState, ticket: int, p: BucketParams, priority: bool = False) -> float:
    """The real time at which `ticket` may be sent, given the bucket's current state.

    Ticket ``issued - k`` is the (k+1)-th from the back of the queue: its slot is when the refill
    (from ``updated_at`` at the rate in force) has repaid the debt down to it. A pause moves
    ``updated_at`` to its end and a throttle slows the refill, so both move every waiting ticket
    back, keeping their order; nothing is ever sent before ``paused_until``.

    A priority ticket takes a token without a normal number, so every normal ticket moves back one
    slot; priority tickets are numbered against ``issued + priority_issued`` instead, so that a later
    priority ticket (behind them) does not move them. Either way, every ticket's slot lies on the
    same grid, one interval apart: no two waiting tickets share a slot.
    """
    refill = _rate(state, p) * p.time_scale
    behind = state.issued + (state.priority_issued if priority else 0)
    due = state.updated_at + (ticket - behind - state.tokens) / refill
    return max(due, state.paused_until)


def bucket_step(state: BucketState | None, op: Op, now: float, p: BucketParams, seconds: float = 0.0) -> Step:
    """The bucket math shared by every backend: the state after `op` at real time `now`, and the wait.

    For "acquire": a token is reserved under a new ``ticket`` and the caller sends after ``wait``
    real seconds — during a pause too, behind the tickets already queued, at or after its end.
    "acquire_priority": the same, but the ticket takes the next free slot ahead of every waiting
    normal ticket (those move back one slot each, in order), behind the waiting priority tickets.
    "pause" takes `seconds` (real).
    """
    s = state or initial_state(now, p)
    low = min(p.min_rate, p.rate)
    rate = _rate(s, p)  # another process may be configured differently
    # Refill since the last update; never backwards in time and never during a pause.
    elapsed = max(0.0, now - s.updated_at)
    tokens = min(p.burst, s.tokens + elapsed * rate * p.time_scale)
    s = replace(s, tokens=tokens, updated_at=max(s.updated_at, now), rate=rate)

    if op == "acquire":
        s = replace(s, tokens=s.tokens - 1.0, issued=s.issued + 1)
        return Step(s, max(0.0, ticket_slot(s, s.issued, p) - now), reserved=True, ticket=s.issued)
    if op == "acquire_priority":
        # The waiting tickets sit on a grid one interval apart from the back of the queue at
        # ``-tokens`` intervals after ``updated_at`` (the last normal ticket's slot, see
        # `ticket_slot`). Those still to come are the grid points after now: after ``updated_at``
        # (= now) or, during a pause, from its end on. The new ticket takes the first of them; one
        # token more of debt moves every normal ticket back one slot. Priority ticket ``c`` sits at
        # ``c - issued - priority_issued - tokens``, so it keeps its slot when later ones arrive.
        debt = -s.tokens
        ahead = max(0, math.floor(debt) + 1 if s.updated_at > now else math.ceil(debt))
        ticket = max(s.priority_back + 1, s.issued + s.priority_issued + 1 - ahead)
        s = replace(s, tokens=s.tokens - 1.0, priority_issued=s.priority_issued + 1, priority_back=ticket)
        wait = max(0.0, ticket_slot(s, ticket, p, priority=True) - now)
        return Step(s, wait, reserved=True, ticket=ticket, priority=True)
    if op == "pause":
        until = max(s.paused_until, now + max(0.0, seconds))
        # Refill stops until the pause ends: the queued tickets keep their debt and their order and
        # resume one slot at a time after it. An idle bucket restarts with at most one token.
        return Step(
            replace(
                s,
                paused_until=until,
                updated_at=until,
                tokens=min(s.tokens, 1.0),
                epoch=s.epoch + 1,
            )
        )
    if op == "grow":
        faster = min(p.rate, rate * p.grow_factor)
        # A faster rate starts at the back of the queue: the debt is rescaled so the last queued
        # ticket keeps its slot (its sleepers cannot learn of an earlier one), and the next ticket
        # comes one new interval after it rather than squeezed in between.
        tokens = s.tokens * faster / rate if s.tokens < 0 else s.tokens
        return Step(replace(s, rate=faster, tokens=tokens))
    if op == "throttle":
        if now - s.throttled_at < p.throttle_cooldown / p.time_scale:
            return Step(s)
        return Step(replace(s, rate=max(low, rate / 2.0), throttled_at=now))
    raise ValueError(f"unknown bucket op {op!r}")


def bucket_key(token: str) -> str:
    """The bucket's key for a token: a hash, so the token itself is never stored."""
    return "notion-" + hashlib.sha256(token.encode()).hexdigest()[:24]


class _SharedBucketLimiter:
    """`RateLimiter` over a backend that can run `bucket_step` in one locked transaction."""

    def __init__(
        self,
        key: str,
        rate: float,
        burst: float = 2.0,
        time_scale: float = 1.0,
        *,
        adaptive: bool = True,
        grow_every: int = 10,
        start_fraction: float = 0.5,
        min_rate: float = 0.5,
        grow_factor: float = 1.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.key = key
        self.params = BucketParams(
            rate=float(rate),
            burst=float(burst),
            time_scale=float(time_scale),
            start_fraction=start_fraction if adaptive else 1.0,
            min_rate=min_rate,
            grow_factor=grow_factor,
        )
        self.adaptive = adaptive
        self.grow_every = max(1, int(grow_every))
        self._sleep = sleep
        self._lock = threading.Lock()
        self._successes = 0
        self._local = threading.local()

    # -- backend -------------------------------------------------------------------------------
    def _transact(self, op: Op, seconds: float = 0.0) -> Step:
        raise NotImplementedError

    def _read(self) -> BucketState | None:
        raise NotImplementedError

    def _read_at(self) -> tuple[BucketState | None, float]:
        """The stored state and the backend's clock (real seconds) read together."""
        return self._read(), time.time()

    # -- RateLimiter -----------------------------------------------------------------------------
    def acquire(self, priority: bool = False) -> None:
        step = self._transact("acquire_priority" if priority else "acquire")
        wait = step.wait
        # Sleep to the ticket's slot; a pause, a halving or a priority ticket since may have moved it
        # back (in queue order): then sleep on to the new slot. One read per wake-up, no polling.
        while wait > _EARLY:
            self._sleep(wait)
            current, now = self._read_at()
            if current is None:
                return
            if step.priority and current.priority_issued < step.state.priority_issued:
                # The row was rewritten without the priority columns (a process of an older version
                # during an upgrade): the ticket's number means nothing any more, queue again.
                step = self._transact("acquire_priority")
                wait = step.wait
                continue
            wait = ticket_slot(current, step.ticket, self.params, step.priority) - now

    def pause(self, seconds: float, reason: str) -> None:
        state = self._transact("pause", seconds).state
        log.warning("Notion requests paused for %.2fs (%s), rate now %.2f/s", seconds, reason, state.rate)

    def on_success(self) -> None:
        if not self.adaptive:
            return
        with self._lock:
            self._successes += 1
            due = self._successes >= self.grow_every
            if due:
                self._successes = 0
        if due:
            self._transact("grow")

    def on_throttled(self) -> None:
        if not self.adaptive:
            return
        with self._lock:
            self._successes = 0
        state = self._transact("throttle").state
        log.info("Notion rate limited: adaptive rate now %.2f/s", state.rate)

    def current_rate(self) -> float:
        state = self._read()
        if state is None:
            return self.params.rate * self.params.start_fraction
        return _rate(state, self.params)

    def __getstate__(self):  # picklable: connections are per process and per thread
        state = self.__dict__.copy()
        for name in ("_lock", "_local", "_sleep"):
            state.pop(name)
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sleep = time.sleep


_EARLY = 1e-4  # real seconds: a wake-up this close to the slot sends (timer granularity)
_COLUMNS = (
    "tokens",
    "updated_at",
    "rate",
    "paused_until",
    "epoch",
    "throttled_at",
    "issued",
    "priority_issued",
    "priority_back",
)
# Integer columns added after the first release: added to an existing table on first use.
_ADDED = ("issued", "priority_issued", "priority_back")
_TABLE = "notion_rate_limit"
_VALUES = ", ".join("?" * (len(_COLUMNS) + 1))


def _state_from_row(row) -> BucketState | None:
    if row is None:
        return None
    return BucketState(*(float(v) for v in row[:4]), int(row[4]), float(row[5]), *(int(v) for v in row[6:9]))


def _row(key: str, s: BucketState) -> tuple:
    return (
        key,
        s.tokens,
        s.updated_at,
        s.rate,
        s.paused_until,
        s.epoch,
        s.throttled_at,
        s.issued,
        s.priority_issued,
        s.priority_back,
    )


def _switch_to_wal(conn: sqlite3.Connection, timeout_s: float = 60.0) -> None:
    """Put the bucket file in WAL mode. The switch needs the file to itself and does not wait on
    the busy timeout, so processes opening a brand-new file together retry it for a bounded time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01 + random.random() * 0.04)


class SqliteRateLimiter(_SharedBucketLimiter):
    """The bucket in a SQLite file (WAL mode); ``BEGIN IMMEDIATE`` is the cross-process file lock.

    One process or many on one machine; every process opening the same `path` with the same `key`
    shares tokens, pause and adaptive rate.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        key: str,
        rate: float = 3.0,
        burst: float = 2.0,
        time_scale: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(key, rate, burst, time_scale, **kwargs)
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._conn()  # fail early (bad path, unwritable folder), not at the first request

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves; timeout: lock waits.
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            _switch_to_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")  # losing the last bucket update on power loss is fine
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} (key TEXT PRIMARY KEY, tokens REAL NOT NULL, "
                "updated_at REAL NOT NULL, rate REAL NOT NULL, paused_until REAL NOT NULL, "
                "epoch INTEGER NOT NULL, throttled_at REAL NOT NULL, "
                + ", ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in _ADDED)
                + ")"
            )
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({_TABLE})")}
            for name in _ADDED:  # a bucket file from before tickets / priority tickets
                if name not in columns:
                    with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                        conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
            self._local.conn = conn
        return conn

    def _transact(self, op: Op, seconds: float = 0.0) -> Step:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # the write lock: other processes wait here
        try:
            step = bucket_step(self._read(), op, time.time(), self.params, seconds)  # under the lock
            conn.execute(
                f"INSERT OR REPLACE INTO {_TABLE} (key, {', '.join(_COLUMNS)}) VALUES ({_VALUES})",
                _row(self.key, step.state),
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return step

    def _read(self) -> BucketState | None:
        row = (
            self._conn()
            .execute(f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE key = ?", (self.key,))
            .fetchone()
        )
        return _state_from_row(row)


class PostgresRateLimiter(_SharedBucketLimiter):
    """The bucket as a row of a small PostgreSQL table, locked with ``SELECT … FOR UPDATE``.

    For several machines (Dagster on PostgreSQL storage). Times come from the database's clock, so
    machines with skewed clocks still agree on the bucket.
    """

    def __init__(
        self, dsn: str, key: str, rate: float = 3.0, burst: float = 2.0, time_scale: float = 1.0, **kwargs
    ) -> None:
        super().__init__(key, rate, burst, time_scale, **kwargs)
        self.dsn = dsn
        self._conn()  # fail early on a bad DSN

    def _conn(self):
        import psycopg2  # only needed for this backend

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.dsn, application_name="notion-sync rate limiter")
            conn.autocommit = True  # explicit BEGIN/COMMIT below; plain reads hold no transaction open
            with conn.cursor() as cur:
                # Two processes creating the table at once can collide on the catalog: serialise them.
                cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (_TABLE,))
                try:
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {_TABLE} (key text PRIMARY KEY, "
                        "tokens double precision NOT NULL, updated_at double precision NOT NULL, "
                        "rate double precision NOT NULL, paused_until double precision NOT NULL, "
                        "epoch bigint NOT NULL, throttled_at double precision NOT NULL, "
                        + ", ".join(f"{name} bigint NOT NULL DEFAULT 0" for name in _ADDED)
                        + ")"
                    )
                    cur.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = %s AND table_schema = current_schema()",
                        (_TABLE,),
                    )
                    columns = {row[0] for row in cur.fetchall()}
                    for name in _ADDED:  # a bucket table from before tickets / priority tickets
                        if name not in columns:  # (ALTER locks the table: only when needed)
                            add = f"ADD COLUMN IF NOT EXISTS {name} bigint NOT NULL DEFAULT 0"
                            cur.execute(f"ALTER TABLE {_TABLE} {add}")
                finally:
                    cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_TABLE,))
            self._local.conn = conn
        return conn

    def _with_retry(self, fn):
        import psycopg2

        for attempt in range(3):
            conn = self._conn()
            try:
                return fn(conn)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                with contextlib.suppress(Exception):
                    conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _transact(self, op: Op, seconds: float = 0.0) -> Step:
        select = f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE key = %s FOR UPDATE"

        def run(conn) -> Step | None:
            with conn.cursor() as cur:
                cur.execute("BEGIN")
                try:
                    cur.execute(select, (self.key,))
                    row = cur.fetchone()
                    cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
                    now = cur.fetchone()[0]
                    step = bucket_step(_state_from_row(row), op, now, self.params, seconds)
                    values = _row(self.key, step.state)
                    if row is None:
                        cur.execute(
                            f"INSERT INTO {_TABLE} (key, {', '.join(_COLUMNS)}) "
                            f"VALUES ({_VALUES.replace('?', '%s')}) ON CONFLICT (key) DO NOTHING",
                            values,
                        )
                        if cur.rowcount == 0:  # another process created the row first: start over
                            cur.execute("ROLLBACK")
                            return None
                    else:
                        cur.execute(
                            f"UPDATE {_TABLE} SET {', '.join(c + ' = %s' for c in _COLUMNS)} WHERE key = %s",
                            (*values[1:], self.key),
                        )
                    cur.execute("COMMIT")
                    return step
                except BaseException:
                    with contextlib.suppress(Exception):
                        cur.execute("ROLLBACK")
                    raise

        while True:
            step = self._with_retry(run)
            if step is not None:
                return step

    def _read(self) -> BucketState | None:
        return self._read_at()[0]

    def _read_at(self) -> tuple[BucketState | None, float]:
        def run(conn):
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT {', '.join(_COLUMNS)}, extract(epoch FROM clock_timestamp())::float8 "
                    f"FROM {_TABLE} WHERE key = %s",
                    (self.key,),
                )
                row = cur.fetchone()
                if row is None:
                    cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
                    return None, cur.fetchone()[0]
                return _state_from_row(row), float(row[-1])

        return self._with_retry(run)


def make_limiter(
    backend: str,
    *,
    token: str,
    rate: float,
    burst: float = 2.0,
    time_scale: float = 1.0,
    path: str | os.PathLike | None = None,
    dsn: str | None = None,
    **kwargs,
) -> _SharedBucketLimiter:
    """The shared limiter for `token` on the chosen backend ("sqlite" needs `path`, "postgres" `dsn`)."""
    key = bucket_key(token)
    if backend == "sqlite":
        if not path:
            raise ValueError("the sqlite rate-limit backend needs a file path")
        return SqliteRateLimiter(path, key, rate, burst, time_scale, **kwargs)
    if backend == "postgres":
        if not dsn:
            raise ValueError("the postgres rate-limit backend needs a DSN (NOTION_RATE_LIMIT_DSN)")
        return PostgresRateLimiter(dsn, key, rate, burst, time_scale, **kwargs)
    raise ValueError(f"unknown rate-limit backend {backend!r}: use 'sqlite' or 'postgres'")
