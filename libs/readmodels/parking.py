"""One bad log entry never stops the projector: it is parked, and the rest is folded.

`apply_or_park` takes a partition-log batch as read from Redis (`apply_or_park_all` several
partitions' batches, in one transaction, falling back to `apply_or_park` for each when the
database refuses it). An entry that is no known event
is parked at once. The events are applied as one batch; when the database refuses the batch
(`rejected`: data it cannot store, a constraint, a value out of range), the batch is split in
halves, each applied on its own, until the one event it refuses is found and parked. Parked
entries go to `parked_events` in the transaction that moves the position past them, so the
trimmer, which trims a log up to that position, only ever drops what is archived or parked.

What is not a rejection (the database or its connection went away, a lost race) is raised for
the caller to retry: parking a good event because the database was down would be wrong. A
unique-key violation is a lost race when the stored position moved meanwhile (another projector
wrote those rows), and a rejection when it did not. `libs.readmodels.replay` applies parked
entries again once what refused them is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import EventDecodeError, StoredEvent, decode_event
from libs.readmodels.errors import LostRace
from libs.readmodels.queries import projected_position
from libs.readmodels.writer import Applied, ParkedEntry, apply_entries, apply_partitions

__all__ = [
    "Projected",
    "apply_or_park",
    "apply_or_park_all",
    "clean_text",
    "refusal",
    "rejected",
]

REASON_CHARS = 500
_BIGINT = 2**63

# An entry as XREAD returns it: its id and its fields.
RawEntry = tuple[str, dict[str, str]]


@dataclass
class Projected:
    """What `apply_or_park` did with a batch: the position now stored, how many of its events
    it projected and which entries it parked (what was already written counts for nothing)."""

    position: str | None = None
    applied: int = 0
    parked: list[ParkedEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Item:
    """One entry of the batch: its event when it decoded, its raw fields always."""

    entry_id: str
    fields: dict[str, str]
    event: StoredEvent | None
    error: str = ""


def clean_text(text: str, limit: int = REASON_CHARS) -> str:
    """`text` as any database stores it: no NUL character (PostgreSQL refuses them), at most
    `limit` characters."""
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rejected(exc: BaseException) -> bool:
    """Whether `exc` says the database refused what was written, rather than that it (or its
    connection) is unavailable: only then does applying the same event again fail again."""
    if isinstance(exc, DBAPIError):
        return not exc.connection_invalidated and isinstance(exc, DataError | IntegrityError)
    if isinstance(exc, StatementError):  # a parameter that could not be sent at all
        return True
    if isinstance(exc, SQLAlchemyError | OSError):
        return False
    # what the driver raises for a value it cannot convert (SQLite: an int over 64 bits)
    return isinstance(exc, ArithmeticError | ValueError | TypeError)


def refusal(exc: BaseException) -> str:
    """Why the database refused a write, in one line that any database stores."""
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first_line = str(detail).strip().splitlines()[0] if str(detail).strip() else ""
    return clean_text(f"refused by the database: {type(detail).__name__}: {first_line}")


def _decode(entry_id: str, fields: dict[str, str]) -> _Item:
    try:
        event = decode_event(fields["data"])
    except KeyError:
        return _Item(entry_id, fields, None, "undecodable: the entry has no data field")
    except EventDecodeError as exc:
        return _Item(entry_id, fields, None, f"undecodable: {exc}")
    stored = StoredEvent(entry_id=entry_id, stream_id=fields.get("sid", entry_id), event=event)
    return _Item(entry_id, fields, stored)


def _task_id(item: _Item) -> int | None:
    if item.event is not None:
        task_id = item.event.event.task_id
    else:
        try:
            task_id = int(item.fields.get("task", ""))
        except ValueError:
            return None
    return task_id if -_BIGINT <= task_id < _BIGINT else None


def _parked(item: _Item, reason: str) -> ParkedEntry:
    return ParkedEntry(
        entry_id=item.entry_id,
        stream_id=clean_text(item.fields.get("sid", item.entry_id), 100),
        task_id=_task_id(item),
        type=clean_text(item.fields.get("type", ""), 100),
        raw=msgspec.json.encode(item.fields).decode(),  # JSON escapes NUL: always storable
        reason=clean_text(reason),
    )


async def apply_or_park(
    engine: AsyncEngine, partition: int, entries: Sequence[RawEntry], expected: str | None
) -> Projected:
    """Apply a partition-log batch (`entries` in log order), parking what cannot be applied.
    `expected` is the position the caller believes is stored: a refused write while it still
    is stored was refused for its data; LostRace means another projector moved it. Raises
    LostRace, and whatever is not a rejection; what was applied before stays applied."""
    result = Projected(position=expected)
    items = [_decode(entry_id, fields) for entry_id, fields in entries]
    await _settle(engine, partition, items, result)
    return result


async def apply_or_park_all(
    engine: AsyncEngine, batches: Mapping[int, Sequence[RawEntry]]
) -> dict[int, Projected] | None:
    """`apply_or_park` for several partitions' batches in one transaction (the usual step:
    nothing to refuse, no race). None, with nothing written, when the database refused it
    (bad data, or another projector's rows landed first): the caller then applies each batch
    with `apply_or_park`, which finds and parks the culprit or reports the lost race."""
    decoded = {p: [_decode(entry_id, fields) for entry_id, fields in b] for p, b in batches.items()}
    work = {
        p: (
            [item.event for item in items if item.event is not None],
            [_parked(item, item.error) for item in items if item.event is None],
        )
        for p, items in decoded.items()
    }
    try:
        applied = await apply_partitions(engine, work)
    except LostRace:
        return None
    except Exception as exc:
        if rejected(exc):
            return None
        raise
    return {
        p: Projected(position=a.position, applied=a.events, parked=list(a.parked))
        for p, a in applied.items()
    }


async def _settle(
    engine: AsyncEngine, partition: int, items: Sequence[_Item], result: Projected
) -> None:
    events = [item.event for item in items if item.event is not None]
    parked = [_parked(item, item.error) for item in items if item.event is None]
    try:
        applied = await _apply(engine, partition, events, parked, result.position)
    except Exception as exc:
        if not rejected(exc):
            raise
        if len(events) > 1:  # the culprit is in one half (or each half has one)
            middle = len(items) // 2
            await _settle(engine, partition, items[:middle], result)
            await _settle(engine, partition, items[middle:], result)
            return
        if not events:
            raise  # only parked entries, and those are always storable: not a data problem
        culprit = next(item for item in items if item.event is not None)
        parked.append(_parked(culprit, refusal(exc)))
        applied = await _apply(engine, partition, [], parked, result.position)
    result.position = applied.position
    result.applied += applied.events
    result.parked += applied.parked


async def _apply(
    engine: AsyncEngine,
    partition: int,
    events: Sequence[StoredEvent],
    parked: Sequence[ParkedEntry],
    expected: str | None,
) -> Applied:
    """`apply_entries`, telling a lost race (the position moved: LostRace) from a write the
    database refused for its data (the position did not move: IntegrityError re-raised)."""
    try:
        return await apply_entries(engine, partition, events, parked=parked)
    except LostRace as exc:
        if await projected_position(engine, partition) != expected:
            raise
        cause = exc.__cause__
        if isinstance(cause, IntegrityError):
            raise cause from None
        raise
