"""Tasks, registered by name. Importing this package registers the built-in tasks."""

from mtpeft.tasks.base import EvalContext, EvalSet, Task, TaskData
from mtpeft.tasks.registry import TASKS, build_task, register_task
from mtpeft.tasks import clone, defect, flaky, search  # noqa: F401  (registration)

__all__ = ["EvalContext", "EvalSet", "Task", "TaskData", "TASKS", "build_task", "register_task"]
