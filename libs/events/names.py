"""Every Redis key, stream and consumer-group name, in one place.

Task N belongs to partition p = N mod P. Every key of a task carries the partition's hash tag
(`{p3}`), next to the partition log, so each Lua script touches one hash slot and the same code
runs on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INGESTORS_GROUP", "RUNNERS_GROUP", "Keys"]

RUNNERS_GROUP = "runners"
INGESTORS_GROUP = "ingestors"


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "ragpoc"
    partitions: int = 16

    def partition_of(self, task_id: int) -> int:
        return task_id % self.partitions

    def _tag(self, partition: int) -> str:
        return f"{self.namespace}:{{p{partition}}}"

    # commands
    def run_commands(self, partition: int) -> str:
        """The partition's run-command stream: run commands spread over the partitions (and so
        over a cluster's shards) like the events they cause."""
        return f"{self._tag(partition)}:cmd:run"

    def run_commands_of(self, task_id: int) -> str:
        return self.run_commands(self.partition_of(task_id))

    def run_command_streams(self) -> list[str]:
        return [self.run_commands(p) for p in range(self.partitions)]

    @property
    def legacy_run_commands(self) -> str:
        """The single run-command stream of versions before the partitioned ones: runners
        still drain it while it exists, so commands queued before an upgrade still run."""
        return f"{self.namespace}:cmd:run"

    @property
    def ingest_commands(self) -> str:
        return f"{self.namespace}:cmd:ingest"

    @property
    def doc_events(self) -> str:
        """doc.ingested / doc.failed, for `?wait` on ingest and for the UI."""
        return f"{self.namespace}:docs:events"

    def dead_letters(self, stream: str) -> str:
        """Where entries of `stream` go after too many failed deliveries."""
        return f"{stream}:dead"

    def delivery_errors(self, stream: str, group: str) -> str:
        """Hash: entry id -> last error of a pending entry (the dead-letter reason)."""
        return f"{stream}:errors:{group}"

    def run_stats(self, partition: int) -> str:
        """Hash of the outcome counters and duration buckets of the partition's runs (all
        runners): one per partition, so a cluster spreads these writes like the rest."""
        return f"{self._tag(partition)}:stats:runs"

    @property
    def legacy_run_stats(self) -> str:
        """The one counters hash of versions before per-partition ones: still added in."""
        return f"{self.namespace}:stats:runs"

    @property
    def projected(self) -> str:
        """Hash partition -> the projector's position, and the pub/sub channel announcing it
        ("p=entry_id ..."), so gateways know read-your-writes without polling SQL."""
        return f"{self.namespace}:projected"

    # ids
    @property
    def task_sequence(self) -> str:
        return f"{self.namespace}:seq:task"

    # per-task keys
    def task_events(self, task_id: int) -> str:
        return f"{self._tag(self.partition_of(task_id))}:task:{task_id}:events"

    def task_lock(self, task_id: int) -> str:
        return f"{self._tag(self.partition_of(task_id))}:task:{task_id}:lock"

    def task_fence(self, task_id: int) -> str:
        return f"{self._tag(self.partition_of(task_id))}:task:{task_id}:fence"

    def run_outcome(self, task_id: int, run_id: str) -> str:
        """Set with a run's terminal event, in the same step: "this run has ended"."""
        return f"{self._tag(self.partition_of(task_id))}:task:{task_id}:run:{run_id}:outcome"

    def idempotency(self, task_id: int, key_digest: str) -> str:
        """A POST /run-agents Idempotency-Key for this task -> the run it started."""
        return f"{self._tag(self.partition_of(task_id))}:task:{task_id}:idem:{key_digest}"

    # per-partition keys
    def partition_log(self, partition: int) -> str:
        return f"{self._tag(partition)}:events"

    def partition_logs(self) -> list[str]:
        return [self.partition_log(p) for p in range(self.partitions)]

    def task_index(self, partition: int) -> str:
        """Sorted set of the partition's task ids whose streams may still hold entries, scored
        by the ms of the oldest one: what the trimmer visits instead of SCANning for streams."""
        return f"{self._tag(partition)}:tasks"
