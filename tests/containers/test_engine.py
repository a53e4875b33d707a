"""The engine helper itself: it finds an engine, a container started through it answers on
127.0.0.1 only, and stopping removes the container (and the suite's network)."""

from __future__ import annotations

import docker.errors
import pytest
import redis

from tests.containers.engine import Engine
from tests.containers.servers import running_servers, valkey_container

pytestmark = pytest.mark.containers


def container_exists(engine: Engine, container_id: str) -> bool:
    client = engine.client()
    try:
        client.containers.get(container_id)
        return True
    except docker.errors.NotFound:
        return False
    finally:
        client.close()


def test_the_engine_answers_and_names_both_images(container_engine: Engine) -> None:
    client = container_engine.client()
    try:
        assert client.ping()
    finally:
        client.close()
    assert container_engine.kind in ("docker", "podman")
    assert set(container_engine.images) == {"valkey", "postgres"}


def test_a_container_answers_on_loopback_and_is_removed_when_stopped(
    container_engine: Engine,
) -> None:
    container, url = valkey_container(container_engine)
    container_id = container.get_wrapped_container().id
    assert container_id is not None
    try:
        assert url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(url) as client:
            client.set("engine-check", "yes")
            assert client.get("engine-check") == b"yes"
        bindings = container.get_wrapped_container().attrs["HostConfig"]["PortBindings"]
        assert {b["HostIp"] for b in bindings["6379/tcp"]} == {"127.0.0.1"}
    finally:
        container.stop()
    assert not container_exists(container_engine, container_id)


def test_the_servers_and_their_network_are_removed_afterwards(container_engine: Engine) -> None:
    client = container_engine.client()
    try:
        before = {network.name for network in client.networks.list()}
        with running_servers(container_engine) as servers:
            during = {network.name for network in client.networks.list()} - before
            assert len(during) == 1
            with redis.Redis.from_url(servers.redis_url) as valkey:
                assert valkey.ping()
            ids = [c.id for c in client.containers.list(filters={"network": during.pop()})]
            assert len(ids) == 2
        assert {network.name for network in client.networks.list()} == before
        assert not any(container_exists(container_engine, str(cid)) for cid in ids)
    finally:
        client.close()
