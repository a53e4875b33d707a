"""SQL read models: schema, pure projections, the projector's writer and read queries."""

from libs.events.ids import entry_key, is_after
from libs.readmodels.engine import create_engine, create_schema
from libs.readmodels.projection import (
    ActivityItem,
    RunView,
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
    "RunView",
    "TaskView",
    "apply_batch",
    "archived_task_events",
    "create_engine",
    "create_schema",
    "entry_key",
    "get_task",
    "is_after",
    "list_activity",
    "list_runs",
    "list_tasks",
    "load_positions",
    "project_run",
    "project_task",
    "projected_position",
    "summarize",
]
