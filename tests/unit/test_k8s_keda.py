"""The runner's KEDA triggers evaluated over what a gateway really reports: their queries, as
`tests.k8s_keda` reads them, applied to the gauges a gateway reads from a real Valkey with the
runners' work spread over two partitions' run-command streams."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from libs.events import RUNNERS_GROUP, Keys
from services.gateway.cluster_metrics import ClusterCollector, read_cluster
from tests.k8s_keda import runner_selector
from tests.k8s_render import render

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"


def gauges(collector: ClusterCollector) -> list[tuple[str, dict[str, str], float]]:
    registry = CollectorRegistry()
    registry.register(collector)
    page = generate_latest(registry).decode()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    ]


async def test_the_runner_triggers_read_the_runners_work_summed_over_every_partition(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """With work in two partitions each query selects the total, where a redis-streams trigger
    per partition would have seen one partition's share."""
    for stream in keys.run_command_streams():
        await redis_client.xgroup_create(stream, RUNNERS_GROUP, id="0", mkstream=True)
    first, second = keys.run_commands(1), keys.run_commands(2)
    for stream in (first, first, first, second, second):
        await redis_client.xadd(stream, {"data": "{}"})
    for stream in (first, second):  # one stream per command: they may sit on two shards
        await redis_client.xreadgroup(RUNNERS_GROUP, "r", {stream: ">"}, count=1)
    page = gauges(ClusterCollector(await read_cluster(redis_client, keys), sse_clients=0))

    (scaled,) = [o for o in render(BASE) if o["kind"] == "ScaledObject"]
    seen: dict[str, float] = {}
    for trigger in scaled["spec"]["triggers"]:
        selector = runner_selector(trigger["metadata"]["query"])
        assert selector is not None, trigger
        metric, labels = selector
        values = [v for name, got, v in page if name == metric and labels.items() <= got.items()]
        seen[trigger["name"]] = max(values)
    assert seen == {"runs-in-hand": 2, "runs-waiting": 3}  # one read from each, 3 left
