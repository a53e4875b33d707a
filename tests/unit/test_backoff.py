"""Retry pacing: the jittered backoff the long-lived loops use while Redis is away, one log line
per outage, which Redis errors count as an outage, and when `ragpoc up` restarts a service or
calls it a crash loop."""

from __future__ import annotations

import structlog
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.testing import capture_logs

from libs.common.backoff import Backoff, FailureStreak, is_nogroup, is_transient
from services.cli.supervisor import RestartPolicy


def test_delays_double_up_to_the_cap_each_drawn_below_its_ceiling() -> None:
    backoff = Backoff(base_s=0.1, cap_s=5.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    for ceiling in ceilings:
        assert 0.0 <= backoff.next_delay() <= ceiling
    for _ in range(5000):  # a long outage: still capped, never an overflow
        assert backoff.next_delay() <= 5.0
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_without_jitter_the_delays_are_the_ceilings() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0, jitter=False)
    assert [backoff.next_delay() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    streak = FailureStreak(structlog.get_logger("t"), "x.down", "x.up", part="p")
    with capture_logs() as logs:
        assert streak.recovered() is False  # no streak: nothing to say
        for _ in range(3):
            streak.failed(RedisConnectionError("gone"), 0.5)
        assert streak.failing
        assert streak.recovered() is True
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("x.down", "warning"),
        ("x.up", "info"),
    ]
    assert logs[0]["error"] == "ConnectionError: gone"
    assert logs[0]["part"] == "p"
    assert logs[1]["failures"] == 3


def test_which_redis_errors_pass_once_the_server_is_back() -> None:
    nogroup = ResponseError("NOGROUP No such key 's' or consumer group 'g'")
    for transient in (
        RedisConnectionError("Connection closed by server."),
        RedisTimeoutError("Timeout reading from socket"),
        BusyLoadingError("Valkey is loading the dataset in memory"),
        ReadOnlyError("You can't write against a read only replica."),
        nogroup,
    ):
        assert is_transient(transient), transient
    assert is_nogroup(nogroup)
    for bug in (ResponseError("WRONGTYPE Operation against a key"), ValueError("x")):
        assert not is_transient(bug)
        assert not is_nogroup(bug)


def test_a_service_is_restarted_with_backoff_until_it_crash_loops() -> None:
    policy = RestartPolicy(limit=5, window_s=60.0)
    # exits 1 s after each start: 1, 2, 4, 8 s of backoff, then the fifth exit within 60 s
    now, delays = 0.0, []
    for _ in range(5):
        started = now
        now += 1.0
        delays.append(policy.after_exit(now, started))
        if delays[-1] is not None:
            now += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 8.0, None]


def test_exits_far_apart_are_no_crash_loop_and_reset_the_backoff() -> None:
    policy = RestartPolicy(limit=3, window_s=60.0)
    assert policy.after_exit(10.0, 0.0) == 1.0
    assert policy.after_exit(12.0, 11.0) == 2.0
    # up for longer than the window: the backoff starts over, the old exits no longer count
    assert policy.after_exit(200.0, 14.0) == 1.0
    assert policy.after_exit(202.0, 201.0) == 2.0
    assert policy.after_exit(205.0, 204.0) is None  # three within 60 s
