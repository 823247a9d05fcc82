"""The map: the four stages in order, what each reads and writes, and how each starts.

    client ─► requests ─► filter ─► filtered ─► split ─► parts ─► infer ─► results ─► merge ─► answers ─► client
                            └──────────────────────┴── dead-letters ◄──────┴────────────────────┘

Every stage is its own consumer group (named after the stage) and scales by
adding members, up to its source topic's partition count. All four run on
:class:`~pipeline.kafka.runner.StageRunner`; merge adds its changelog-backed
table (:mod:`pipeline.kafka.merge_member`, topic ``merge-state``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from pipeline.errors import RequestError
from pipeline.messages import Headers, Part, Result, now_ms
from pipeline.settings import Settings
from pipeline.stages.base import Handler, Output, Record, reject


@dataclass(frozen=True)
class Stage:
    name: str
    source: str
    sinks: tuple[str, ...]
    does: str


STAGES: tuple[Stage, ...] = (
    Stage("filter", "requests", ("filtered", "answers", "dead-letters"), "validate, normalise, reject"),
    Stage("split", "filtered", ("parts", "results", "answers", "dead-letters"), "tokenize and scatter into parts"),
    Stage("infer", "parts", ("results", "dead-letters"), "batch parts across requests through ONNX Runtime"),
    Stage("merge", "results", ("answers", "merge-state", "dead-letters"), "gather parts, answer exactly once"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

log = logging.getLogger("pipeline.flow")


def build_handler(name: str, settings: Settings) -> Handler:
    """The core of a runner-based stage, with its heavy objects loaded."""
    if name == "filter":
        from pipeline.stages.filter import filter_records

        return partial(filter_records, settings=settings)
    if name == "split":
        from pipeline.stages.split import build_split

        return build_split(settings)
    if name == "infer":
        from pipeline.stages.infer import build_infer

        return partial(infer_records, build_infer(settings))
    raise ValueError(f"stage {name!r} does not run on the stage runner")


def infer_records(infer: Callable[[list[Part]], list[Result]], records: Sequence[Record]) -> list[Output]:
    """Decode parts, run them as one batch, encode results.

    A part that cannot be decoded is dead-lettered but not answered: its
    request is answered by merge at the deadline (``partial``). Parts already
    past their deadline are skipped, so an overloaded infer spends the
    accelerator on requests that can still be answered in time.
    """
    outputs: list[Output] = []
    parts: list[Part] = []
    headers: list[Headers] = []
    now = now_ms()
    for record in records:
        try:
            part = Part.decode(record.value)
        except RequestError as exc:
            outputs.extend(reject(record, exc.at(record.where), "infer")[-1:])
            continue
        header = Headers.parse(record.headers)
        if header.deadline_ms is not None and header.deadline_ms < now:
            continue
        parts.append(part)
        headers.append(header)
    if parts:
        for result, header in zip(infer(parts), headers, strict=True):
            stamped = header.stamped("infer").to_list()
            outputs.append(Output("results", result.id.encode(), result.encode(), stamped))
    return outputs


def run_stage(name: str, settings: Settings, stop: threading.Event) -> None:
    """Run one member of stage ``name`` until ``stop`` is set."""
    from pipeline.kafka.runner import Batching, StageRunner

    stage = next(s for s in STAGES if s.name == name)
    batching = (
        Batching(settings.batch_max_parts, settings.batch_max_wait_ms, settings.max_in_flight)
        if name == "infer"
        else Batching(max_batch=200, max_wait_ms=0, max_in_flight=settings.max_in_flight)
    )
    if name == "merge":
        from pipeline.kafka.merge_member import Merger

        merger = Merger(settings)
        StageRunner(settings, name, stage.source, merger, batching, hooks=merger).run(stop)
        return
    StageRunner(settings, name, stage.source, build_handler(name, settings), batching).run(stop)
