"""Every Lua script's keys share the task's partition hash tag, so each script touches one hash
slot and the same code runs on Redis Cluster."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from libs.events import Keys

KEYS = Keys(namespace="ragpoc", partitions=16)


def slots(*names: str) -> set[int]:
    return {key_slot(name.encode()) for name in names}


@pytest.mark.parametrize("task_id", [1, 3, 16, 19, 12345])
def test_append_lock_and_outcome_keys_of_a_task_share_one_slot(task_id: int) -> None:
    partition = KEYS.partition_of(task_id)
    names = (
        KEYS.task_events(task_id),
        KEYS.partition_log(partition),
        KEYS.task_lock(task_id),
        KEYS.task_fence(task_id),
        KEYS.run_outcome(task_id, "run-1"),
        KEYS.task_index(partition),
    )
    assert len(slots(*names)) == 1


def test_key_names_carry_the_partition_tag() -> None:
    assert KEYS.task_lock(19) == "ragpoc:{p3}:task:19:lock"
    assert KEYS.task_fence(19) == "ragpoc:{p3}:task:19:fence"
    assert KEYS.task_events(19) == "ragpoc:{p3}:task:19:events"
    assert KEYS.partition_log(3) == "ragpoc:{p3}:events"
    assert KEYS.task_index(3) == "ragpoc:{p3}:tasks"


def test_different_partitions_spread_over_different_slots() -> None:
    assert len(slots(*(KEYS.partition_log(p) for p in range(16)))) == 16
    assert len(slots(*(KEYS.task_index(p) for p in range(16)))) == 16
