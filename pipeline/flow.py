"""The map: every stage as data, in the order a request meets them.

    client ─► requests ─► filter ─► filtered ─► split ─► parts ─► infer ─► results ─► merge ─► answers ─► client
                            └──────────────────────┴── dead-letters ◄──────┴────────────┘   │ (chat)   ▲
                                                                          prompts ◄──────────┘          │
                                                                             └─► generate ─► answer-chunks, answers

Each :class:`Stage` says what it reads, what it writes, where its logic is
built (:data:`pipeline.stages.BUILDERS`, imported only by the member that
runs it, so heavy models load nowhere else), how it batches, and which
changelog backs its state, if any. Every stage is its own consumer group
(named after the stage), scales by adding members up to its source topic's
partition count, and runs on the one loop in :mod:`pipeline.runtime.runner`
(:func:`pipeline.runtime.member.run_stage`). This module is pure data: it
imports no runtime and no stage. Nothing in the code asks a stage's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.records import Batching
from pipeline.settings import Settings


def quick(settings: Settings) -> Batching:
    """Take whatever has arrived: per-record work, no reason to wait for more."""
    return Batching(max_batch=200, max_wait_ms=0, max_in_flight=settings.runtime.max_in_flight)


def model_batches(settings: Settings) -> Batching:
    """Wait a little for records of other requests: the model runs them in one batch."""
    return Batching(settings.infer.batch_max_parts, settings.infer.batch_max_wait_ms, settings.runtime.max_in_flight,
                    max_running=settings.infer.batch_max_running)  # fmt: skip


def generate_batches(settings: Settings) -> Batching:
    """Hand prompts over as they come and keep several batches running: they join the engine's batch."""
    return Batching(max_batch=settings.chat.generate_max_sequences, max_wait_ms=0,
                    max_in_flight=2 * settings.chat.generate_max_sequences,
                    max_running=settings.chat.generate_max_sequences)  # fmt: skip


@dataclass(frozen=True)
class Stage:
    name: str
    source: str
    sinks: tuple[str, ...]
    does: str
    batching: Callable[[Settings], Batching] = quick
    changelog: str | None = None  # the compacted topic backing its state table
    follows: str | None = None  # a compacted topic read whole into its hooks (filter: the answer cache)


STAGES: tuple[Stage, ...] = (
    Stage("filter", "requests", ("filtered", "answers", "dead-letters"),
          "validate, normalise, reject; answer repeats from the answer cache", follows="answer-cache"),
    Stage("split", "filtered", ("parts", "results", "answers", "dead-letters"), "tokenize and scatter into parts"),
    Stage("infer", "parts", ("results", "dead-letters"), "batch parts across requests through ONNX Runtime",
          batching=model_batches),
    Stage("merge", "results", ("answers", "prompts", "merge-state", "dead-letters"),
          "gather parts, answer exactly once (chat: hand a grounded prompt to generate)", changelog="merge-state"),
    Stage("generate", "prompts", ("answer-chunks", "answers", "answer-cache", "sessions", "dead-letters"),
          "write chat replies with the LLM, continuously batched, streamed; sessions in a table",
          batching=generate_batches, changelog="sessions"),
)  # fmt: skip
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
