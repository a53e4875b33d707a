"""Command-side state: what guards commands, never shown to users directly.

- `locks`: the task lock in Redis (`SET NX PX` with an `INCR` fencing token).
- `claims` and `schema`: the run claims in SQL, the database layer of duplicate protection.
- `idempotency`: Idempotency-Key records, so a retried request gets the run it started.
- `task_ids`: the durable task-id counter (ids never repeat, whatever Redis lost).

The read models (what users see, rebuilt from events) live in `libs.readmodels`.
"""

from libs.commandside.claims import Claim, ClaimState
from libs.commandside.errors import CommandSideError
from libs.commandside.locks import Holder, Lease, TaskLocks

__all__ = ["Claim", "ClaimState", "CommandSideError", "Holder", "Lease", "TaskLocks"]
