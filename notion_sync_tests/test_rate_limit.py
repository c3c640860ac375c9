"""The shared token bucket: its math (pure), sharing across processes (SQLite, PostgreSQL), pause, adapt."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid

import pytest

from notion_sync.notion.rate_limit import (
    BucketParams,
    BucketState,
    PostgresRateLimiter,
    RateLimiter,
    SqliteRateLimiter,
    bucket_key,
    bucket_step,
    initial_state,
    make_limiter,
    ticket_slot,
)

PG_ADMIN_DSN = os.environ.get(
    "NOTION_SYNC_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


# -- the pure bucket math ------------------------------------------------------------------------
P = BucketParams(rate=4.0, burst=2.0, time_scale=1.0, start_fraction=0.5, min_rate=0.5, grow_factor=1.1)


def test_new_bucket_starts_full_at_half_rate():
    state = initial_state(100.0, P)
    assert state == BucketState(tokens=2.0, updated_at=100.0, rate=2.0)
    step = bucket_step(None, "acquire", 100.0, P)
    assert step.reserved and step.wait == 0 and step.state.tokens == 1.0


def test_acquire_reserves_future_slots_at_the_rate():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    state = None
    waits = []
    for _ in range(5):  # all at the same instant: 2 from the burst, then one slot every 1/4 s
        step = bucket_step(state, "acquire", 0.0, params)
        state = step.state
        waits.append(step.wait)
    assert waits == pytest.approx([0.0, 0.0, 0.25, 0.5, 0.75])
    assert state.tokens == pytest.approx(-3.0)
    # One second later the debt of 3 is repaid and one token is back.
    step = bucket_step(state, "acquire", 1.0, params)
    assert step.wait == 0 and step.state.tokens == pytest.approx(0.0)


def test_refill_is_capped_at_burst_and_never_runs_backwards():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    state = BucketState(tokens=0.0, updated_at=10.0, rate=4.0)
    assert bucket_step(state, "grow", 1000.0, params).state.tokens == 2.0
    back = bucket_step(state, "acquire", 5.0, params)  # clock went backwards: no refill, no crash
    assert back.state.tokens == -1.0 and back.state.updated_at == 10.0


def test_time_scale_speeds_up_refill_and_shortens_waits():
    params = BucketParams(rate=3.0, burst=1.0, time_scale=20.0, start_fraction=1.0)
    state = bucket_step(None, "acquire", 0.0, params).state
    step = bucket_step(state, "acquire", 0.0, params)
    assert step.wait == pytest.approx(1 / 60)  # 3 per virtual second = 60 per real second
    assert bucket_step(state, "acquire", 1 / 60, params).wait == pytest.approx(0.0)


def test_pause_moves_queued_slots_back_in_order_and_nothing_is_sent_during_it():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    state, tickets = None, []
    for _ in range(5):  # 2 from the burst, then slots at 0.25, 0.5, 0.75 s
        step = bucket_step(state, "acquire", 0.0, params)
        state = step.state
        tickets.append(step.ticket)
    assert tickets == [1, 2, 3, 4, 5]
    paused = bucket_step(state, "pause", 0.1, params, seconds=2.0).state
    assert paused.paused_until == pytest.approx(2.1) and paused.epoch == state.epoch + 1
    # The three waiting tickets keep their order and their spacing, after the pause.
    assert [ticket_slot(paused, t, params) for t in (3, 4, 5)] == pytest.approx([2.25, 2.5, 2.75])
    assert ticket_slot(paused, 2, params) == pytest.approx(2.1)  # never before the pause ends
    # A worker answered 429 that queues again during the pause goes behind them, not first.
    during = bucket_step(paused, "acquire", 0.5, params)
    assert during.reserved and during.ticket == 6 and during.wait == pytest.approx(3.0 - 0.5)
    # A shorter pause never shortens a longer one.
    assert bucket_step(paused, "pause", 0.1, params, seconds=0.5).state.paused_until == pytest.approx(2.1)


def test_pause_of_an_idle_bucket_restarts_with_one_token():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    paused = bucket_step(BucketState(tokens=2.0, updated_at=0.0, rate=4.0), "pause", 0.0, params, 2.0).state
    first = bucket_step(paused, "acquire", 0.5, params)
    assert first.wait == pytest.approx(1.5)  # at the end of the pause...
    second = bucket_step(first.state, "acquire", 0.5, params)
    assert second.wait == pytest.approx(1.75)  # ...then one slot at a time, no burst


def test_halving_slows_the_queue_and_growing_starts_at_its_back():
    params = BucketParams(rate=4.0, burst=1.0, start_fraction=1.0, grow_factor=2.0, throttle_cooldown=0.0)
    state = None
    for _ in range(4):  # slots 0, 0.25, 0.5, 0.75
        state = bucket_step(state, "acquire", 0.0, params).state
    slow = bucket_step(state, "throttle", 0.0, params).state  # 2/s: the waiting tickets slow down
    assert [ticket_slot(slow, t, params) for t in (2, 3, 4)] == pytest.approx([0.5, 1.0, 1.5])
    fast = bucket_step(slow, "grow", 0.0, params).state  # back to 4/s
    # The back of the queue keeps its slot (its sleeper cannot learn of an earlier one) and the
    # next ticket comes one new interval after it, not squeezed in before it.
    assert ticket_slot(fast, 4, params) == pytest.approx(1.5)
    assert bucket_step(fast, "acquire", 0.0, params).wait == pytest.approx(1.75)


def test_adaptive_rate_grows_to_the_configured_rate_and_halves_to_the_floor():
    state = initial_state(0.0, P)
    for _ in range(5):
        state = bucket_step(state, "grow", 0.0, P).state
    assert state.rate == pytest.approx(2.0 * 1.1**5)
    for _ in range(20):
        state = bucket_step(state, "grow", 0.0, P).state
    assert state.rate == 4.0  # capped: the steady state sits at the configured rate
    state = bucket_step(state, "throttle", 10.0, P).state
    assert state.rate == 2.0
    # 429s of requests already in flight (within the cooldown) do not halve again.
    assert bucket_step(state, "throttle", 10.5, P).state.rate == 2.0
    for t in range(3):
        state = bucket_step(state, "throttle", 20.0 + 10 * t, P).state
    assert state.rate == 0.5  # floor


def test_rate_is_clamped_to_each_callers_configuration():
    stored = BucketState(tokens=0.0, updated_at=0.0, rate=10.0)
    assert bucket_step(stored, "grow", 0.0, P).state.rate == 4.0


# -- priority tickets (the realtime lane) ------------------------------------------------------------
def _queue(params: BucketParams, count: int, now: float = 0.0) -> tuple[BucketState, list[int]]:
    state, tickets = None, []
    for _ in range(count):
        step = bucket_step(state, "acquire", now, params)
        state = step.state
        tickets.append(step.ticket)
    return state, tickets


def test_priority_ticket_takes_the_next_slot_and_the_waiting_ones_move_back_one_each():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    state, tickets = _queue(params, 10)  # 2 from the burst, then slots at 0.25, 0.5, ..., 2.0 s
    before = [ticket_slot(state, t, params) for t in tickets]
    assert before == pytest.approx([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    # At 0.6 s, tickets 1-4 are gone (0, 0, 0.25, 0.5) and 5-10 wait (0.75 ... 2.0).
    step = bucket_step(state, "acquire_priority", 0.6, params)
    assert step.reserved and step.priority
    assert step.wait == pytest.approx(0.75 - 0.6)  # ticket 5's slot: the next free one
    assert ticket_slot(step.state, step.ticket, params, priority=True) == pytest.approx(0.75)
    after = [ticket_slot(step.state, t, params) for t in tickets[4:]]
    assert after == pytest.approx([s + 0.25 for s in before[4:]])  # each waiting one: one slot back
    # The bucket is the same: one token, as a normal ticket takes; the next normal ticket queues
    # at the back, one slot further back.
    assert step.state.tokens == pytest.approx(bucket_step(state, "acquire", 0.6, params).state.tokens)
    nxt = bucket_step(step.state, "acquire", 0.6, params)
    assert nxt.wait + 0.6 == pytest.approx(2.0 + 0.25 + 0.25)


def test_priority_tickets_queue_among_themselves_ahead_of_the_normal_ones():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    state, tickets = _queue(params, 10)
    first = bucket_step(state, "acquire_priority", 0.6, params)
    second = bucket_step(first.state, "acquire_priority", 0.6, params)
    later = bucket_step(second.state, "acquire_priority", 0.7, params)  # refill in between: same grid
    s = later.state
    assert [ticket_slot(s, t.ticket, params, priority=True) for t in (first, second, later)] == pytest.approx(
        [0.75, 1.0, 1.25]
    )
    assert [ticket_slot(s, t, params) for t in tickets[4:]] == pytest.approx(
        [1.5, 1.75, 2.0, 2.25, 2.5, 2.75]
    )
    # Once the priority queue has drained, a new priority ticket again takes the next free slot.
    again = bucket_step(s, "acquire_priority", 1.3, params)
    assert again.wait + 1.3 == pytest.approx(1.5)
    assert ticket_slot(again.state, tickets[4], params) == pytest.approx(1.75)


def test_priority_ticket_of_an_idle_or_lightly_used_bucket_is_an_ordinary_one():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    assert bucket_step(None, "acquire_priority", 0.0, params).wait == 0.0
    state, _ = _queue(params, 2)  # burst used up, nobody waiting: the next slot is 0.25 s away
    assert bucket_step(state, "acquire_priority", 0.0, params).wait == pytest.approx(0.25)
    assert bucket_step(state, "acquire_priority", 0.1, params).wait == pytest.approx(0.15)


def test_priority_ticket_during_a_pause_goes_first_after_it():
    params = BucketParams(rate=4.0, burst=2.0, start_fraction=1.0)
    state, tickets = _queue(params, 5)  # waiting: 0.25, 0.5, 0.75
    paused = bucket_step(state, "pause", 0.1, params, seconds=2.0).state  # until 2.1: 2.25, 2.5, 2.75
    step = bucket_step(paused, "acquire_priority", 0.5, params)
    assert step.wait + 0.5 == pytest.approx(2.25)
    assert [ticket_slot(step.state, t, params) for t in tickets[2:]] == pytest.approx([2.5, 2.75, 3.0])
    # An idle bucket paused restarts with one token: the first slot after the pause, its end.
    idle = bucket_step(BucketState(tokens=2.0, updated_at=0.0, rate=4.0), "pause", 0.0, params, 2.0).state
    normal = bucket_step(idle, "acquire", 0.5, params)
    assert normal.wait == pytest.approx(1.5)
    first = bucket_step(normal.state, "acquire_priority", 0.6, params)
    assert first.wait + 0.6 == pytest.approx(2.0)  # ahead of the normal ticket waiting for 2.0...
    assert ticket_slot(first.state, normal.ticket, params) == pytest.approx(2.25)  # ...which moves back
    # ...and a pause moves the priority tickets back too, still first.
    longer = bucket_step(first.state, "pause", 0.7, params, seconds=3.0).state
    assert ticket_slot(longer, first.ticket, params, priority=True) == pytest.approx(3.7)
    assert ticket_slot(longer, normal.ticket, params) == pytest.approx(3.95)


def _simulate(seed: int, params: BucketParams, adaptive: bool, ops: int = 400) -> list[dict]:
    """Workers as `acquire` runs them: each ticket sleeps to its slot, reads the state and either
    sends or sleeps on. Random acquires (in bursts, so queues build up and drain), priority acquires,
    pauses and, when `adaptive`, growths and halvings. Returns every ticket: when it was issued,
    whether it is a priority one, when it was sent, the tickets waiting when it was issued (normal:
    ``behind``, priority: ``ahead``) and the pause in force when it was sent."""
    import heapq
    import random

    rng = random.Random(seed)
    state = None
    now = 0.0
    waiting: list[tuple[float, int, int, bool]] = []  # (wake-up, number, ticket, priority)
    tickets: list[dict] = []

    def send_due(until: float) -> None:
        while waiting and waiting[0][0] <= until:
            wake, n, ticket, priority = heapq.heappop(waiting)
            slot = ticket_slot(state, ticket, params, priority)
            tolerance = 1e-9 * max(1.0, slot)
            assert slot >= tickets[n]["slot"] - tolerance, "a waiting ticket's slot never moves earlier"
            tickets[n]["slot"] = slot
            if slot <= wake + tolerance:
                tickets[n].update(sent=wake, paused_until=state.paused_until)
            else:
                heapq.heappush(waiting, (slot, n, ticket, priority))

    for _ in range(ops):
        now += rng.expovariate(1 / 0.4)  # ~5.6 acquires/s on average, in bursts
        send_due(now)
        roll = rng.random()
        if roll < 0.80:
            priority = roll < 0.12
            for _ in range(1 if priority else rng.choice((1, 1, 1, 3, 8))):
                step = bucket_step(state, "acquire_priority" if priority else "acquire", now, params)
                state = step.state
                assert step.priority is priority and step.reserved and step.wait >= 0
                slot = ticket_slot(state, step.ticket, params, priority)
                assert max(slot, now) == pytest.approx(now + step.wait)
                tickets.append(
                    {
                        "at": now,
                        "priority": priority,
                        "slot": slot,
                        "rate": state.rate,
                        "behind": {n for _, n, _, p in waiting if not p},
                        "ahead": {n for _, n, _, p in waiting if p},
                    }
                )
                heapq.heappush(waiting, (now + step.wait, len(tickets) - 1, step.ticket, priority))
        elif roll < 0.83:
            state = bucket_step(state, "pause", now, params, seconds=rng.uniform(0.0, 1.0)).state
        elif adaptive:
            state = bucket_step(state, "grow" if roll < 0.98 else "throttle", now, params).state
    send_due(float("inf"))
    return tickets


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_priority_never_exceeds_the_bucket_and_keeps_every_queue_in_order(seed, adaptive):
    params = BucketParams(rate=5.0, burst=2.0, start_fraction=0.5, throttle_cooldown=0.5, grow_factor=1.5)
    tickets = _simulate(seed, params, adaptive)
    assert sum(t["priority"] and bool(t["behind"]) for t in tickets) >= 20  # priority jumped queues
    assert all(t["sent"] >= t["at"] - 1e-9 for t in tickets)
    # Every window: at most rate x window + burst, priority tickets or not (the configured rate,
    # which the adaptive rate never exceeds).
    sent = sorted(t["sent"] for t in tickets)
    for i in range(len(sent)):
        for j in range(i + 1, len(sent)):
            assert j - i + 1 <= params.rate * (sent[j] - sent[i]) + params.burst + 1e-6
    for t in tickets:
        if t["priority"]:
            # Ahead of every normal ticket waiting when it was issued, behind the waiting priority ones.
            assert all(t["sent"] <= tickets[n]["sent"] + 1e-9 for n in t["behind"])
            assert all(t["sent"] >= tickets[n]["sent"] - 1e-9 for n in t["ahead"])
            if not adaptive:  # ...so it waits at most one slot per priority ticket ahead, + a pause
                bound = max(t["at"], t["paused_until"]) + (len(t["ahead"]) + 1) / t["rate"]
                assert t["sent"] <= bound + 1e-9
        else:
            assert all(t["sent"] >= tickets[n]["sent"] - 1e-9 for n in t["behind"] | t["ahead"])


def test_bucket_key_hides_the_token():
    key = bucket_key("ntn_secret_token_value")
    assert "ntn_secret" not in key and key == bucket_key("ntn_secret_token_value") != bucket_key("other")


# -- one process -----------------------------------------------------------------------------------
def test_sqlite_limiter_paces_threads_without_spinning(tmp_path):
    limiter = SqliteRateLimiter(tmp_path / "bucket.sqlite", "k", rate=200.0, burst=2, adaptive=False)
    assert isinstance(limiter, RateLimiter)
    transactions = 0
    inner = limiter._transact

    def counting(*args, **kwargs):
        nonlocal transactions
        transactions += 1
        return inner(*args, **kwargs)

    limiter._transact = counting
    stamps: list[float] = []
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        limiter.acquire()
        stamps.append(time.time())

    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(100)))
    elapsed = time.time() - start
    assert elapsed >= (100 - 2) / 200 * 0.98
    assert elapsed < (100 - 2) / 200 + 0.5
    assert transactions == 100  # one locked transaction per request: waiting sleeps, it does not poll


def test_adaptive_limiter_slow_start_climb_and_halving(tmp_path):
    limiter = SqliteRateLimiter(tmp_path / "b.sqlite", "k", rate=3.0, burst=2, time_scale=50, grow_every=5)
    assert limiter.current_rate() == pytest.approx(1.5)
    limiter.acquire()
    for _ in range(5 * 3):
        limiter.on_success()
    assert limiter.current_rate() == pytest.approx(1.5 * 1.1**3)
    for _ in range(5 * 20):
        limiter.on_success()
    assert limiter.current_rate() == pytest.approx(3.0)
    limiter.on_throttled()
    assert limiter.current_rate() == pytest.approx(1.5)
    limiter.on_throttled()  # within the cooldown (2 virtual s = 40 ms real): ignored
    assert limiter.current_rate() == pytest.approx(1.5)


def test_pause_holds_other_limiters_on_the_same_bucket(tmp_path):
    path = tmp_path / "b.sqlite"
    a = SqliteRateLimiter(path, "k", rate=100.0, adaptive=False)
    b = SqliteRateLimiter(path, "k", rate=100.0, adaptive=False)
    other_key = SqliteRateLimiter(path, "other", rate=100.0, adaptive=False)
    a.pause(0.4, "test")
    start = time.monotonic()
    other_key.acquire()
    assert time.monotonic() - start < 0.1  # a different token is not paused
    b.acquire()
    assert time.monotonic() - start >= 0.38


def test_make_limiter_validates_backend(tmp_path):
    with pytest.raises(ValueError, match="unknown rate-limit backend"):
        make_limiter("redis", token="t", rate=3)
    with pytest.raises(ValueError, match="NOTION_RATE_LIMIT_DSN"):
        make_limiter("postgres", token="t", rate=3)
    limiter = make_limiter("sqlite", token="tok", rate=3, path=tmp_path / "x.sqlite")
    assert limiter.key == bucket_key("tok")


def test_limiter_is_picklable(tmp_path):
    import pickle

    limiter = SqliteRateLimiter(tmp_path / "b.sqlite", "k", rate=3.0)
    copy = pickle.loads(pickle.dumps(limiter))
    copy.acquire()
    assert copy.params == limiter.params


def test_priority_ticket_survives_an_older_process_resetting_the_priority_columns(tmp_path):
    import sqlite3

    from notion_sync.notion.rate_limit import _COLUMNS, _row

    path = tmp_path / "b.sqlite"
    limiter = SqliteRateLimiter(path, "k", rate=20.0, burst=1, adaptive=False)
    # A long history of priority tickets, long since sent, and now a short normal queue.
    state, now = None, time.time() - 60.0
    for _ in range(1000):
        now += 0.05
        state = bucket_step(state, "acquire_priority", now, limiter.params).state
    for _ in range(3):
        state = bucket_step(state, "acquire", time.time(), limiter.params).state
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"INSERT INTO notion_rate_limit (key, {', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 10)})",
            _row("k", state),
        )
    resets = []

    def older_process_writes_then_sleep(seconds: float) -> None:
        if not resets:  # as its INSERT OR REPLACE without the priority columns does
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE notion_rate_limit SET priority_issued = 0, priority_back = 0")
            resets.append(seconds)
        time.sleep(seconds)

    limiter._sleep = older_process_writes_then_sleep
    start = time.monotonic()
    limiter.acquire(priority=True)  # its slot, from the reset count, would be ~50 s away
    assert resets and time.monotonic() - start < 1.0
    assert limiter._read().priority_issued == 1


# -- several OS processes ----------------------------------------------------------------------
def _stamp_acquires(limiter, count: int, start_at: float, queue) -> None:
    """Child process: wait for the common start, then acquire `count` times and report the times."""
    time.sleep(max(0.0, start_at - time.time()))
    stamps = []
    for _ in range(count):
        limiter.acquire()
        stamps.append(time.time())
    queue.put(stamps)


def _pause_then_report(limiter, seconds: float, queue) -> None:
    limiter.pause(seconds, "test from another process")
    queue.put(time.time())


def _acquire_and_report(limiter, queue) -> None:
    limiter.acquire()
    queue.put(time.time())


def _max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def _run_processes(make, processes: int, per_process: int) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 1.5  # spawn start-up (imports) must not count
    procs = [
        ctx.Process(target=_stamp_acquires, args=(make(), per_process, start_at, queue))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    stamps = [t for _ in procs for t in queue.get(timeout=60)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return stamps


def _assert_within_bucket(stamps: list[float], rate: float, burst: int, count: int = 240) -> None:
    assert len(stamps) == count
    stamps.sort()
    total_time = stamps[-1] - stamps[0]
    assert len(stamps) <= rate * total_time + burst + 1
    # Any window, not just the whole run: at most rate x window + burst (+1 for the edge, +timer slack).
    for window in (0.05, 0.2, 0.5, 1.0):
        assert _max_in_window(stamps, window) <= rate * (window + 0.01) + burst + 1, window
    # ...and the limiter does not throttle far below its rate (the exact share of the limit is the
    # benchmark's figure; a loaded machine slows the processes themselves).
    assert len(stamps) >= rate * total_time * 0.8


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_sharing_a_sqlite_bucket_never_exceed_it(tmp_path, processes):
    rate, burst = 100.0, 2
    path = str(tmp_path / "bucket.sqlite")
    _assert_within_bucket(
        _run_processes(
            lambda: SqliteRateLimiter(path, "shared", rate=rate, burst=burst, adaptive=False),
            processes,
            240 // processes,
        ),
        rate,
        burst,
    )


def test_pause_from_one_process_holds_another(tmp_path):
    path = str(tmp_path / "bucket.sqlite")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    pauser = ctx.Process(
        target=_pause_then_report, args=(SqliteRateLimiter(path, "k", rate=50.0, adaptive=False), 1.0, queue)
    )
    pauser.start()
    paused_at = queue.get(timeout=60)
    pauser.join(timeout=30)
    waiter = ctx.Process(target=_acquire_and_report, args=(SqliteRateLimiter(path, "k", rate=50.0), queue))
    waiter.start()
    acquired_at = queue.get(timeout=60)
    waiter.join(timeout=30)
    assert acquired_at >= paused_at + 0.98


def _flood(limiter, threads: int, count: int, start_at: float, queue) -> None:
    """Child process: `threads` threads acquiring normal tickets until `count` are taken (a backfill)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        asked = time.time()
        limiter.acquire()
        return asked, time.time()

    time.sleep(max(0.0, start_at - time.time()))
    with ThreadPoolExecutor(threads) as pool:
        queue.put(("flood", list(pool.map(one, range(count)))))


def _priority_acquires(limiter, count: int, start_at: float, spacing: float, queue) -> None:
    """Child process: `count` priority acquires `spacing` s apart from `start_at` (a realtime run)."""
    times = []
    for n in range(count):
        time.sleep(max(0.0, start_at + n * spacing - time.time()))
        asked = time.time()
        limiter.acquire(priority=True)
        times.append((asked, time.time()))
    queue.put(("priority", times))


def _priority_through_a_flood(make, rate: float, burst: int) -> None:
    """One process floods the bucket with normal tickets from 16 threads (a queue ~16 slots long);
    another takes a priority ticket every 0.4 s meanwhile: each waits about one slot, not the queue."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 1.5  # spawn start-up (imports) must not count
    flood_count, priority_count = 200, 6
    procs = [
        ctx.Process(target=_flood, args=(make(), 16, flood_count, start_at, queue)),
        ctx.Process(target=_priority_acquires, args=(make(), priority_count, start_at + 1.0, 0.4, queue)),
    ]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    flood, priority = results["flood"], results["priority"]
    interval = 1 / rate
    first, last = priority[0][0], priority[-1][0]
    queued = sorted(sent - asked for asked, sent in flood if first - 0.5 <= asked <= last)
    assert queued[len(queued) // 2] >= 8 * interval  # the flood's queue was long meanwhile...
    waits = [sent - asked for asked, sent in priority]
    assert max(waits) <= interval + 0.05, waits  # ...and the priority tickets waited one slot at most
    assert priority[-1][1] < max(sent for _, sent in flood)  # (the flood was still going)
    # Together, still within the bucket: priority tickets take slots, they do not add any.
    _assert_within_bucket([sent for _, sent in flood + priority], rate, burst, flood_count + priority_count)


def test_priority_tickets_of_one_process_pass_another_process_flood_sqlite(tmp_path):
    path = str(tmp_path / "bucket.sqlite")
    _priority_through_a_flood(
        lambda: SqliteRateLimiter(path, "k", rate=40.0, burst=2, adaptive=False), 40.0, 2
    )


def test_priority_columns_are_added_to_an_existing_bucket_file(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the table as the first release created it
        conn.execute(
            "CREATE TABLE notion_rate_limit (key TEXT PRIMARY KEY, tokens REAL NOT NULL, "
            "updated_at REAL NOT NULL, rate REAL NOT NULL, paused_until REAL NOT NULL, "
            "epoch INTEGER NOT NULL, throttled_at REAL NOT NULL)"
        )
        conn.execute("INSERT INTO notion_rate_limit VALUES ('k', 2.0, 0.0, 3.0, 0.0, 0, 0.0)")
    limiter = SqliteRateLimiter(path, "k", rate=100.0, adaptive=False)
    limiter.acquire(priority=True)
    limiter.acquire()
    state = limiter._read()
    assert (state.issued, state.priority_issued, state.priority_back) == (1, 1, 1)


def _client_requests(url: str, token: str, limiter, count: int, start_at: float, queue) -> None:
    """Child process: `count` API calls through a NotionClient on the shared limiter, 3 in flight."""
    from notion_sync.notion.client import NotionClient
    from notion_sync.notion.pipeline import run_pipelined

    client = NotionClient(
        token, base_url=url, limiter=limiter, time_scale=limiter.params.time_scale, pool_size=3
    )
    time.sleep(max(0.0, start_at - time.time()))
    results = [r for _, r in run_pipelined(range(count), lambda _: client.request("GET", "/v1/users/me"), 3)]
    queue.put(sum(not isinstance(r, BaseException) for r in results))


def _against_sandbox(sandbox, make_limiter, processes: int, total: int = 120) -> dict:
    """`processes` OS processes share one bucket matching the server's rate; returns the server's stats."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 2.0
    procs = [
        ctx.Process(
            target=_client_requests,
            args=(sandbox.url, sandbox.token, make_limiter(), total // processes, start_at, queue),
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    succeeded = sum(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert succeeded == total
    return sandbox.stats()


def _assert_server_saw_the_bucket(stats: dict, rate: float, burst: int) -> None:
    assert stats["rate_limited"] == 0, stats["requests_by_status"]
    intervals = stats["admitted"] - 1
    # Never more than rate x time + burst. The server stamps a request when it has answered it, so
    # either end of the span may be late by its processing time: 1 virtual second (33 ms real) of slack.
    assert intervals <= rate * (stats["span_virtual_s"] + 1.0) + burst + 1
    assert stats["achieved_rps_virtual"] >= 0.8 * rate  # and not far below it (exact share: the benchmark)


SANDBOX_SPEED = 30


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_sharing_a_sqlite_bucket_stay_under_the_sandbox_limit(tmp_path, processes):
    from notion_sync.sandbox.notion_server import NotionSandbox

    path = str(tmp_path / "bucket.sqlite")
    with NotionSandbox(speed=SANDBOX_SPEED, rps=3, burst=10) as sandbox:
        stats = _against_sandbox(
            sandbox,
            lambda: SqliteRateLimiter(path, bucket_key(sandbox.token), 3.0, 2, SANDBOX_SPEED, adaptive=False),
            processes,
        )
    _assert_server_saw_the_bucket(stats, 3.0, 2)


# -- PostgreSQL -------------------------------------------------------------------------------------
@pytest.fixture
def pg_dsn():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(PG_ADMIN_DSN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN!r}: {exc}")
    admin.autocommit = True
    name = f"notion_sync_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    dsn = PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={name}")
    try:
        yield dsn
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_postgres_limiter_shares_pause_and_adaptive_rate(pg_dsn):
    a = PostgresRateLimiter(pg_dsn, "k", rate=3.0, burst=2, time_scale=50, grow_every=2)
    b = PostgresRateLimiter(pg_dsn, "k", rate=3.0, burst=2, time_scale=50, grow_every=2)
    assert isinstance(a, RateLimiter)
    a.acquire()
    assert b.current_rate() == pytest.approx(1.5)
    for _ in range(4):
        a.on_success()
    assert b.current_rate() == pytest.approx(1.5 * 1.1**2)
    b.on_throttled()
    assert a.current_rate() == pytest.approx(1.5 * 1.1**2 / 2)
    a.pause(0.3, "test")
    start = time.monotonic()
    b.acquire()
    assert time.monotonic() - start >= 0.28


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_sharing_a_postgres_bucket_never_exceed_it(pg_dsn, processes):
    rate, burst = 100.0, 2
    _assert_within_bucket(
        _run_processes(
            lambda: PostgresRateLimiter(pg_dsn, "shared", rate=rate, burst=burst, adaptive=False),
            processes,
            240 // processes,
        ),
        rate,
        burst,
    )


def test_priority_tickets_of_one_process_pass_another_process_flood_postgres(pg_dsn):
    _priority_through_a_flood(
        lambda: PostgresRateLimiter(pg_dsn, "k", rate=40.0, burst=2, adaptive=False), 40.0, 2
    )


def test_priority_columns_are_added_to_an_existing_postgres_table(pg_dsn):
    import psycopg2

    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:  # the table before priority tickets
        cur.execute(
            "CREATE TABLE notion_rate_limit (key text PRIMARY KEY, tokens double precision NOT NULL, "
            "updated_at double precision NOT NULL, rate double precision NOT NULL, "
            "paused_until double precision NOT NULL, epoch bigint NOT NULL, "
            "throttled_at double precision NOT NULL, issued bigint NOT NULL DEFAULT 0)"
        )
        cur.execute("INSERT INTO notion_rate_limit VALUES ('k', 2.0, 0.0, 3.0, 0.0, 0, 0.0, 5)")
    conn.close()
    limiter = PostgresRateLimiter(pg_dsn, "k", rate=100.0, adaptive=False)
    limiter.acquire(priority=True)
    limiter.acquire()
    state = limiter._read()
    assert (state.issued, state.priority_issued, state.priority_back) == (6, 1, 6)


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_sharing_a_postgres_bucket_stay_under_the_sandbox_limit(pg_dsn, processes):
    from notion_sync.sandbox.notion_server import NotionSandbox

    with NotionSandbox(speed=SANDBOX_SPEED, rps=3, burst=10) as sandbox:
        stats = _against_sandbox(
            sandbox,
            lambda: PostgresRateLimiter(
                pg_dsn, bucket_key(sandbox.token), 3.0, 2, SANDBOX_SPEED, adaptive=False
            ),
            processes,
        )
    _assert_server_saw_the_bucket(stats, 3.0, 2)
