"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest

from libs.events import Keys


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, keys: Keys) -> pytest.MonkeyPatch:
    """The environment a `ragpoc` command run in-process by the test reads: this test's Redis,
    namespace and partitions."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RAGPOC_NAMESPACE", keys.namespace)
    monkeypatch.setenv("RAGPOC_PARTITIONS", str(keys.partitions))
    return monkeypatch
