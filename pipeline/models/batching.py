"""Micro-batching by token budget, with length bucketing.

A batch is padded to its longest row, so its cost is rows × longest. Sorting
parts by length before filling batches keeps rows of similar length together
(little padding), and the budget bounds memory and latency per run whatever
the mix of short and long parts. Parts of different tasks run on different
models and never share a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from prometheus_client import Counter

from pipeline.messages import Part

# On the member's /metrics (pipeline.runtime.metrics serves the default registry).
TOKENS = Counter("pipeline_tokens_total", "Tokens run through the model, real or padding", ["stage", "kind"])


def count_tokens(stage: str, real: int, padding: int) -> None:
    """Tokens a model batch ran: ``padding`` of them were only there to square the batch."""
    TOKENS.labels(stage, "real").inc(real)
    TOKENS.labels(stage, "padding").inc(padding)


def plan_batches(
    parts: Sequence[Part], max_parts: int, max_tokens: int, key: Callable[[Part], str] | None = None
) -> list[list[int]]:
    """Indices into ``parts``, grouped into batches of one task each (or of one ``key(part)``).

    Within a batch ``rows <= max_parts`` and ``rows * longest <= max_tokens``;
    a single part longer than ``max_tokens`` gets a batch of its own. Tasks come
    in order of first appearance, and batches of a task from short to long.
    ``key`` groups finer than the task: faq parts in different languages run
    on different models (:func:`pipeline.tasks.language.part_route`).
    """
    if max_parts < 1 or max_tokens < 1:
        raise ValueError(f"batch limits must be positive, got max_parts={max_parts} max_tokens={max_tokens}")
    by_task: dict[str, list[int]] = {}
    for index, part in enumerate(parts):
        by_task.setdefault(part.task if key is None else key(part), []).append(index)
    batches: list[list[int]] = []
    for indices in by_task.values():
        current: list[int] = []
        for index in sorted(indices, key=lambda i: len(parts[i].input_ids)):
            longest = len(parts[index].input_ids)  # sorted: the newcomer is the longest
            if current and (len(current) + 1 > max_parts or (len(current) + 1) * longest > max_tokens):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
    return batches


def pad(parts: Sequence[Part], pad_id: int, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's feeds for ``parts``: int64 (rows, longest), right-padded, for ``input_names`` only."""
    rows, longest = len(parts), max((len(p.input_ids) for p in parts), default=0)
    input_ids = np.full((rows, longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((rows, longest), dtype=np.int64)
    token_type_ids = np.zeros((rows, longest), dtype=np.int64)
    for row, part in enumerate(parts):
        n = len(part.input_ids)
        input_ids[row, :n] = part.input_ids
        attention_mask[row, :n] = 1
        if part.token_type_ids is not None:
            token_type_ids[row, :n] = part.token_type_ids
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return {name: feeds[name] for name in input_names}
