"""The retry rules as a pure function: delays, order, the attempt limit and the reset on success."""

from dagster import AssetKey

from notion_sync.automation.retry_policy import FailedPartition, RetryState, plan_retries, retry_delay_s
from notion_sync.config import RetryConfig

POLICY = RetryConfig()
KEYS = (AssetKey(["salesforce", "Account"]), AssetKey(["notion", "Account"]))


def failure(day: str = "2026-11-20", run_id: str = "run-a", at: float = 1000.0, **kwargs) -> FailedPartition:
    return FailedPartition("Account", day, KEYS, run_id, at, **kwargs)


def test_delays_follow_backoff_and_rate_limit_floor():
    assert [retry_delay_s(POLICY, n, False) for n in (1, 2, 3, 4)] == [60, 120, 240, 240]
    assert [retry_delay_s(POLICY, n, True) for n in (1, 2, 3)] == [300, 300, 300]
    fast = RetryConfig(backoff_minutes=[0.05], min_after_rate_limit_minutes=0.1)
    assert retry_delay_s(fast, 2, False) == 3 and retry_delay_s(fast, 1, True) == 6


def test_first_retry_waits_one_minute_and_tags_the_attempt():
    requests, state, alerts = plan_retries([failure()], set(), RetryState(), 1059.0, POLICY)
    assert requests == [] and alerts == [] and state.partitions == {}
    requests, state, alerts = plan_retries([failure()], set(), RetryState(), 1060.0, POLICY)
    (request,) = requests
    assert request.job_name == "sync_Account" and request.partition_key == "2026-11-20"
    assert request.asset_selection == list(KEYS)
    assert request.tags["notion_sync/retry_attempt"] == "1"
    assert request.tags["notion_sync/retry_of"] == "run-a"
    assert request.tags["notion_sync/lane"] == "backfill" and request.tags["dagster/priority"] == "-1"
    assert "1" in request.run_key and "run-a" in request.run_key
    # The same failed run is never retried twice.
    again, state, _ = plan_retries([failure()], set(), state, 5000.0, POLICY)
    assert again == []


def test_rate_limited_first_and_after_five_minutes():
    plain = failure("2026-11-19", "run-p", at=0.0)
    limited = failure("2026-11-20", "run-r", at=100.0, rate_limited=True)
    requests, _, _ = plan_retries([plain, limited], set(), RetryState(), 200.0, POLICY)
    assert [r.partition_key for r in requests] == ["2026-11-19"]  # the 429 waits 5 minutes
    requests, _, _ = plan_retries([plain, limited], set(), RetryState(), 400.0, POLICY)
    assert [r.partition_key for r in requests] == ["2026-11-20", "2026-11-19"]


def test_three_retries_then_one_alert_and_reset_on_success():
    state = RetryState()
    now = 0.0
    run_keys = set()
    for attempt, delay in enumerate([60, 120, 240], start=1):
        failed = failure(run_id=f"run-{attempt}", at=now)
        early, _, _ = plan_retries([failed], set(), state, now + delay - 1, POLICY)
        assert early == []
        requests, state, alerts = plan_retries([failed], set(), state, now + delay, POLICY)
        assert [r.tags["notion_sync/retry_attempt"] for r in requests] == [str(attempt)] and alerts == []
        run_keys.add(requests[0].run_key)
        # The retry run is queued: its partition is in progress and keeps its count.
        _, state, _ = plan_retries([], {"Account|2026-11-20"}, state, now + delay + 1, POLICY)
        now += delay + 10
    assert len(run_keys) == 3
    last = failure(run_id="run-4", at=now)
    requests, state, alerts = plan_retries([last], set(), state, now + 3600, POLICY)
    assert requests == [] and len(alerts) == 1 and "after 3 retries" in alerts[0]
    _, state, alerts = plan_retries([last], set(), state, now + 7200, POLICY)
    assert alerts == []  # alerted once
    # A later success (neither failed nor in progress) resets the count: the next failure gets 3 again.
    _, state, _ = plan_retries([], set(), state, now + 8000, POLICY)
    assert state.partitions == {}
    requests, _, _ = plan_retries([failure(run_id="run-5", at=now)], set(), state, now + 9000, POLICY)
    assert requests[0].tags["notion_sync/retry_attempt"] == "1"


def test_state_round_trips_through_the_cursor():
    _, state, _ = plan_retries([failure()], set(), RetryState(), 1060.0, POLICY)
    assert RetryState.from_cursor(state.to_cursor()) == state
    assert RetryState.from_cursor(None) == RetryState()


def test_realtime_failure_is_retried_in_the_realtime_lane():
    requests, _, _ = plan_retries([failure(lane="realtime")], set(), RetryState(), 2000.0, POLICY)
    assert requests[0].tags["notion_sync/lane"] == "realtime" and requests[0].tags["dagster/priority"] == "10"


def test_zero_attempts_alerts_at_once():
    _, _, alerts = plan_retries([failure()], set(), RetryState(), 1000.0, RetryConfig(max_attempts=0))
    assert len(alerts) == 1


def test_permanent_failure_alerts_at_once_once_and_is_never_retried():
    """A configuration error (e.g. a wrong NOTION_TOKEN) fails every retry the same way: no retry, one alert
    with the error, also when it reads as rate limited (Notion's `public_api_request_blocked` is a 429)."""
    error = "Failure: 401 unauthorized ... check NOTION_TOKEN"
    failed = failure(permanent=True, rate_limited=True, error=error)
    requests, state, alerts = plan_retries([failed], set(), RetryState(), 1000.0, POLICY)
    assert requests == [] and len(alerts) == 1
    assert "Account partition 2026-11-20" in alerts[0] and "run-a" in alerts[0] and error in alerts[0]
    assert "no automatic retry" in alerts[0]
    requests, state, alerts = plan_retries([failed], set(), state, 99_000.0, POLICY)
    assert requests == [] and alerts == []  # once for this failed run
    # Fixed and re-run by hand: the success resets; a new failure (not a configuration error) is retried.
    _, state, _ = plan_retries([], set(), state, 100_000.0, POLICY)
    assert state.partitions == {}
    requests, _, alerts = plan_retries([failure(run_id="run-b")], set(), state, 100_000.0, POLICY)
    assert requests[0].tags["notion_sync/retry_attempt"] == "1" and alerts == []


def test_a_range_failed_permanently_in_one_run_alerts_once():
    """A backfill run of many days that fails on a configuration error: one alert for the run."""
    days = [failure(f"2026-11-0{day}", run_id="range-run", permanent=True, error="401") for day in (3, 1, 2)]
    other = failure("2026-11-05", run_id="other-run", permanent=True)
    requests, _, alerts = plan_retries([*days, other], set(), RetryState(), 1000.0, POLICY)
    assert requests == [] and len(alerts) == 2
    assert alerts[0].startswith("Account partitions 2026-11-01 to 2026-11-03 (3) failed with an error")
    assert "(run range-run): 401;" in alerts[0] and alerts[0].endswith("materialize them again.")
    assert alerts[1].startswith("Account partition 2026-11-05 failed") and "(run other-run);" in alerts[1]
