"""Commands: what a service is asked to do. Named as verbs, carried on the command streams."""

from __future__ import annotations

import msgspec

__all__ = ["Command", "RunAgent"]


class RunAgent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="run"):
    """Run the agent once for a task. Sent to `ragpoc:cmd:run`."""

    task_id: int
    run_id: str
    fence: int = 0
    question: str
    v: int = 1


Command = RunAgent
