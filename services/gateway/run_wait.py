"""`POST /run-agents?wait=SECONDS`: wait, within a bound, for the run's end, on the gateway's
shared event reader.

A waiter subscribes to its task on the gateway's hub (the one reader that follows every
partition log for the SSE clients), so a thousand waiters cost no Redis connection each, only
a queue each. What the runner wrote between the run's request and the subscription is read
once from the partition log; an event that comes both ways is taken once (by its log id). If
the hub drops the waiter (it fell QUEUE_LIMIT events behind), it catches up from the log and
subscribes again.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from libs.events import Appended, LockReleased, RunCompleted, RunFailed, RunSuperseded, StoredEvent
from libs.events.ids import is_after
from libs.events.store import Undecodable
from libs.readmodels import archived_task_events
from services.gateway.context import GatewayContext
from services.gateway.validation import query_seconds

__all__ = [
    "RunOutcome",
    "archived_outcome",
    "wait_for_outcome",
    "wait_seconds",
]

RunOutcome = RunCompleted | RunFailed | RunSuperseded
OUTCOME_TYPES = frozenset({"run.completed", "run.failed", "run.superseded"})
MAX_WAIT_SECONDS = 300.0
RELEASE_GRACE_S = 5.0


def wait_seconds(request: Request) -> float | None:
    return query_seconds(request, "wait", MAX_WAIT_SECONDS)


class _RunEnd:
    """Folds the task's events, in log order, into the run's outcome."""

    def __init__(self, requested: Appended, run_id: str) -> None:
        self.run_id = run_id
        self.partition = requested.partition
        self.last_log_id = requested.log_id  # every event up to here has been looked at
        self.outcome: RunOutcome | None = None
        self.seen = requested  # the newest event of the run looked at
        self.done = False  # the outcome and, after it, the run's lock.released

    def take(self, stored: StoredEvent) -> None:
        if not is_after(stored.entry_id, self.last_log_id):
            return  # read from the log and delivered by the hub as well
        self.last_log_id = stored.entry_id
        event = stored.event
        if self.done or getattr(event, "run_id", None) != self.run_id:
            return
        if isinstance(event, RunOutcome):
            self.outcome = event
            self.seen = Appended(stored.stream_id, stored.entry_id, self.partition)
            self.done = isinstance(event, RunSuperseded)  # the lock is the newer run's
        elif isinstance(event, LockReleased) and self.outcome is not None:
            self.seen = Appended(stored.stream_id, stored.entry_id, self.partition)
            self.done = True


async def _catch_up(ctx: GatewayContext, task_id: int, end: _RunEnd) -> None:
    """The task's events in the partition log after the last one looked at."""
    entries = await ctx.store.log_entries(end.partition, f"({end.last_log_id}", "+")
    for entry in entries:
        if not isinstance(entry, Undecodable) and entry.event.task_id == task_id:
            end.take(entry)


async def wait_for_outcome(
    ctx: GatewayContext, task_id: int, requested: Appended, run_id: str, seconds: float
) -> RunOutcome | None:
    """The run's terminal event, or None if it did not end within `seconds`. After a completed
    or failed outcome it waits on (within the wait, and RELEASE_GRACE_S at most) for the run's
    `lock.released`, so a client told the run ended can start the next one at once; then for
    the projector to pass what it saw, so the caller reads its own write."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    end = _RunEnd(requested, run_id)
    subscription = ctx.hub.subscribe(task_id)
    try:
        async with asyncio.timeout_at(deadline) as scope:
            await _catch_up(ctx, task_id, end)
            while not end.done:
                if end.outcome is not None:
                    scope.reschedule(min(deadline, loop.time() + RELEASE_GRACE_S))
                if not subscription.pending and not subscription.closed:
                    await subscription.wait()
                while subscription.pending and not end.done:
                    end.take(subscription.pending.popleft().stored)
                if subscription.closed and not end.done:
                    if not subscription.overflowed:
                        break  # the gateway is stopping
                    ctx.hub.unsubscribe(subscription)
                    subscription = ctx.hub.subscribe(task_id)
                    await _catch_up(ctx, task_id, end)
    except TimeoutError:
        pass
    finally:
        ctx.hub.unsubscribe(subscription)
    if end.outcome is None:
        return None
    await ctx.wait_projected(end.seen)
    return end.outcome


async def archived_outcome(ctx: GatewayContext, task_id: int, run_id: str) -> RunOutcome | None:
    """A projected run's terminal event, from the archive (it holds every projected event)."""
    outcomes = await archived_task_events(ctx.engine, task_id, types=OUTCOME_TYPES)
    for stored in reversed(outcomes):
        if isinstance(stored.event, RunOutcome) and stored.event.run_id == run_id:
            return stored.event
    return None
