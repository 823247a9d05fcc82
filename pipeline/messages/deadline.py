"""A request's deadline: where it travels, and the one clock every stage reads it with.

A client names it in the request (``deadline_ms``) or in the ``pipeline-deadline-ms``
header, or names none. filter fixes it (:func:`fix_deadline`: the request's own, else
the header's, else the produce time plus ``PIPELINE_DEFAULT_TIMEOUT_MS``) and from
then on it travels in one place, the header, which every record of the request
carries (the filtered request, its parts, results, prompt, chunks and answer); the
filtered request's body holds none.

The clock is wall-clock epoch milliseconds (:func:`now_ms`), the clock of Kafka's
record timestamps, so members on different hosts agree on a deadline to within their
clock sync; no stage compares a deadline with any other clock.
"""

from __future__ import annotations

import time


def now_ms() -> float:
    """The one clock deadlines are read with: epoch milliseconds."""
    return time.time() * 1000.0


def fix_deadline(asked_ms: int | None, header_ms: int | None, produced_ms: float, default_timeout_ms: int) -> int:
    """The deadline of a request: the request's own, else its header's, else produce time + the default timeout."""
    return asked_ms or header_ms or int(produced_ms + default_timeout_ms)


def passed(deadline_ms: int | None, now: float | None = None) -> bool:
    """Whether ``deadline_ms`` is set and has come."""
    left = left_ms(deadline_ms, now)
    return left is not None and left <= 0


def left_ms(deadline_ms: int | None, now: float | None = None) -> float | None:
    """Milliseconds until ``deadline_ms`` (negative once it passed); None when there is no deadline."""
    if deadline_ms is None:
        return None
    return deadline_ms - (now_ms() if now is None else now)
