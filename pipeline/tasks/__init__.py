"""The tasks: how each kind of request is split into parts and merged back.

``get_task(name)`` is the one way in. Which tasks exist is
:data:`pipeline.catalog.CATALOG`; :data:`IMPLEMENTATIONS` links each to its
code with real imports, made the first time the task is asked for, not at
import (a task loads its models and tokenizers only where it is used).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.catalog import CATALOG
from pipeline.errors import InvalidRequestError
from pipeline.tasks.base import Runtime, Task

__all__ = ["IMPLEMENTATIONS", "Runtime", "Task", "get_task"]


def _qa() -> Task:
    from pipeline.tasks.qa import QaTask

    return QaTask()


def _classify() -> Task:
    from pipeline.tasks.classify import ClassifyTask

    return ClassifyTask()


def _embed() -> Task:
    from pipeline.tasks.embed import EmbedTask

    return EmbedTask()


def _faq() -> Task:
    from pipeline.tasks.faq.task import FaqTask

    return FaqTask()


def _chat() -> Task:
    from pipeline.tasks.chat import ChatTask

    return ChatTask()


IMPLEMENTATIONS: dict[str, Callable[[], Task]] = {
    "qa": _qa,
    "classify": _classify,
    "embed": _embed,
    "faq": _faq,
    "chat": _chat,
}

_loaded: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a bad request, not a crash."""
    task = _loaded.get(name)
    if task is not None:
        return task
    if name not in CATALOG:
        raise InvalidRequestError(f"unknown task {name!r}; known: {', '.join(CATALOG)}")
    task = IMPLEMENTATIONS[name]()
    _loaded[name] = task
    return task
