"""Events and commands round-trip through the codec; older events still decode."""

from __future__ import annotations

import pytest

from libs.events import (
    EventDecodeError,
    LlmDelta,
    RunAgent,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunStarted,
    TaskCreated,
    decode_command,
    decode_event,
    encode,
)

EVENTS = [
    TaskCreated(task_id=7, title="Sky", description="Why is it blue?"),
    RunRequested(task_id=7, run_id="r1", fence=3, query="why blue"),
    RunStarted(task_id=7, run_id="r1", fence=3, worker="host-1"),
    LlmDelta(task_id=7, run_id="r1", fence=3, index=0, text="The "),
    RunCompleted(task_id=7, run_id="r1", fence=3, answer="The sky is blue.", duration_s=0.5),
    RunFailed(task_id=7, run_id="r1", fence=3, reason="LLM timed out"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_the_codec(event: object) -> None:
    assert decode_event(encode(event)) == event  # type: ignore[arg-type]


def test_the_type_tag_is_the_past_tense_event_name() -> None:
    assert encode(TaskCreated(task_id=1, title="x", at=1.0)).startswith(b'{"type":"task.created"')


def test_an_event_written_before_fence_version_and_worker_existed_still_decodes() -> None:
    old = b'{"type":"run.started","task_id":4,"run_id":"r9","at":1700000000.5}'
    event = decode_event(old)
    assert event == RunStarted(task_id=4, run_id="r9", at=1700000000.5, fence=0, v=1, worker="")


def test_an_unknown_event_type_is_a_clear_error() -> None:
    with pytest.raises(EventDecodeError, match="not a known event"):
        decode_event(b'{"type":"task.exploded","task_id":1}')


def test_a_run_command_round_trips() -> None:
    command = RunAgent(task_id=3, run_id="abc", fence=2, question="Why is the sky blue?")
    assert decode_command(encode(command), RunAgent) == command
