"""SQL read models: schema, pure projections, the projector's writer, read queries, the event
archive (history Redis trimmed) and rebuild."""

from libs.readmodels.projection import (
    ActivityItem,
    RunStatus,
    RunView,
    TaskStatus,
    TaskView,
    project_run,
    project_task,
    summarize,
)
from libs.readmodels.queries import (
    archived_task_events,
    get_task,
    list_activity,
    list_runs,
    list_tasks,
    projected_position,
)
from libs.readmodels.writer import LostRace, apply_batch, load_positions

__all__ = [
    "ActivityItem",
    "LostRace",
    "RunStatus",
    "RunView",
    "TaskStatus",
    "TaskView",
    "apply_batch",
    "archived_task_events",
    "get_task",
    "list_activity",
    "list_runs",
    "list_tasks",
    "load_positions",
    "project_run",
    "project_task",
    "projected_position",
    "summarize",
]
