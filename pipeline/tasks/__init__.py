"""The tasks: how each kind of request is split into parts and merged back.

``get_task(name)`` is the one way in. The registry is a plain mapping written
out below, not something modules add themselves to at import.
"""

from __future__ import annotations

from pipeline.errors import InvalidRequestError
from pipeline.tasks.base import Runtime, Task
from pipeline.tasks.classify import ClassifyTask
from pipeline.tasks.embed import EmbedTask
from pipeline.tasks.faq import FaqTask
from pipeline.tasks.qa import QaTask

__all__ = ["TASKS", "Runtime", "Task", "get_task"]

TASKS: dict[str, Task] = {task.name: task for task in (QaTask(), ClassifyTask(), EmbedTask(), FaqTask())}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a bad request, not a crash."""
    try:
        return TASKS[name]
    except KeyError:
        raise InvalidRequestError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
