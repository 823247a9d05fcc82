"""The tasks: how each kind of request is split into parts and merged back.

``get_task(name)`` is the one way in. Which tasks exist, and where each one's
implementation lives, is :data:`pipeline.catalog.CATALOG`; an implementation
is imported the first time it is asked for, not at import.
"""

from __future__ import annotations

import importlib

from pipeline.catalog import CATALOG
from pipeline.errors import InvalidRequestError
from pipeline.tasks.base import Runtime, Task

__all__ = ["Runtime", "Task", "get_task"]

_loaded: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a bad request, not a crash."""
    task = _loaded.get(name)
    if task is not None:
        return task
    spec = CATALOG.get(name)
    if spec is None:
        raise InvalidRequestError(f"unknown task {name!r}; known: {', '.join(CATALOG)}")
    module, _, cls = spec.implementation.partition(":")
    task = getattr(importlib.import_module(f"pipeline.tasks.{module}"), cls)()
    _loaded[name] = task
    return task
