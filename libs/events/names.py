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
    @property
    def run_commands(self) -> str:
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

    @property
    def run_stats(self) -> str:
        """Hash of run outcome counters and duration buckets (all runners)."""
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
