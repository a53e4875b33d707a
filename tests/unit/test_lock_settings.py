"""A command is never reclaimed from a runner while that runner can still extend its lease:
RAGPOC_CONSUMER_MIN_IDLE_MS must be at least 1.5 x RAGPOC_LOCK_TTL_MS, checked at load."""

from __future__ import annotations

import pytest

from libs.common import SettingsError, load_settings


@pytest.mark.parametrize(("ttl_ms", "min_idle_ms"), [(30_000, 30_000), (1000, 1499), (900, 100)])
def test_a_reclaim_sooner_than_the_lease_can_lapse_is_refused_naming_both(
    ttl_ms: int, min_idle_ms: int
) -> None:
    environ = {"RAGPOC_LOCK_TTL_MS": str(ttl_ms), "RAGPOC_CONSUMER_MIN_IDLE_MS": str(min_idle_ms)}
    with pytest.raises(SettingsError) as refused:
        load_settings(environ)
    assert "RAGPOC_CONSUMER_MIN_IDLE_MS" in str(refused.value)
    assert "RAGPOC_LOCK_TTL_MS" in str(refused.value)
    assert str(-(-ttl_ms * 3 // 2)) in str(refused.value)  # says what would do


def test_the_defaults_and_the_boundary_pass() -> None:
    defaults = load_settings({})
    assert defaults.consumer_min_idle_ms * 2 >= defaults.lock_ttl_ms * 3
    edge = load_settings({"RAGPOC_LOCK_TTL_MS": "1000", "RAGPOC_CONSUMER_MIN_IDLE_MS": "1500"})
    assert (edge.lock_ttl_ms, edge.consumer_min_idle_ms) == (1000, 1500)


def test_only_the_ttl_set_is_checked_against_the_default_idle_time() -> None:
    with pytest.raises(SettingsError, match="RAGPOC_LOCK_TTL_MS \\(60000\\)"):
        load_settings({"RAGPOC_LOCK_TTL_MS": "60000"})
