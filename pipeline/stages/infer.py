"""infer: run parts through ONNX Runtime in token-budgeted batches, across requests.

:class:`InferRecords` is the record adapter: decode parts, shed those that
cannot make their deadline, run the rest as one batch, encode results.
:func:`build_infer` loads, for every task that has a
model configured, its export (exporting it first if needed), an ORT session
on a checked provider, and the task's runtime (the faq knowledge base is
embedded here, once). Tasks on the same model and export kind share one
session. ``Infer(parts)`` returns one :class:`~pipeline.messages.Result` per
part, in the order of ``parts``.

Bad input never raises: a part for a task not served here, or one the model
cannot take, gets an error output (merge answers its request with that code).
When ORT fails on a batch, its rows are retried one by one so one bad part
cannot fail its neighbours from other requests. What does raise is broken
infrastructure: an execution provider failing at run time, or memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

from pipeline.catalog import CATALOG, TASK_NAMES
from pipeline.errors import (
    ConfigError,
    DeadlineExceededError,
    InvalidRequestError,
    ModelError,
    ProviderError,
    RequestError,
    TooLargeError,
)
from pipeline.messages import Headers, Part, Result, left_ms, now_ms
from pipeline.models.batching import count_tokens, pad, plan_batches
from pipeline.models.export import ensure_exported
from pipeline.models.quantize_encoder import encoder_variant
from pipeline.models.session import OrtModel, open_session
from pipeline.models.tokenizer import LazyTokenizer, Tokenizer
from pipeline.records import Output, Record, StageLogic
from pipeline.settings import Settings
from pipeline.stages.base import BadRecords
from pipeline.tasks import Runtime, Task, get_task
from pipeline.tasks.base import PartOutput, error_output
from pipeline.tasks.language import part_route, task_routes

STAGE = "infer"
BAD = BadRecords(STAGE, answers=False)  # a bad record is dead-lettered; merge answers its request
log = logging.getLogger("pipeline.stages.infer")


@dataclass(frozen=True)
class Served:
    """One task as infer runs it: the task's logic, its model session and runtime."""

    task: Task
    model: OrtModel
    runtime: Runtime


class Infer:
    """The infer stage's core: a batch of parts in, one result per part out."""

    def __init__(self, served: dict[str, Served], settings: Settings) -> None:
        self.served = served
        self.settings = settings

    @property
    def providers(self) -> dict[str, str]:
        """The execution provider each served task runs on, for logs and health checks."""
        return {name: s.model.provider for name, s in self.served.items()}

    def __call__(self, parts: Sequence[Part]) -> list[Result]:
        outputs: list[PartOutput | None] = [None] * len(parts)
        runnable: list[int] = []
        for index, part in enumerate(parts):
            problem = self._check(part)
            if problem is None:
                runnable.append(index)
            else:
                outputs[index] = problem
        candidates = [parts[i] for i in runnable]
        for batch in plan_batches(
            candidates, self.settings.infer.batch_max_parts, self.settings.infer.batch_max_tokens, self._key
        ):
            indices = [runnable[b] for b in batch]
            for index, output in zip(indices, self._run_batch([parts[i] for i in indices]), strict=True):
                outputs[index] = output
        return [
            Result(id=p.id, task=p.task, part=p.part, of=p.of, output=o if o is not None else _lost(p))
            for p, o in zip(parts, outputs, strict=True)
        ]

    def _key(self, part: Part) -> str:
        """The served entry of ``part``: its task, or its language's route (``faq:zh``)."""
        return part_route(part, self.served)

    def _check(self, part: Part) -> PartOutput | None:
        """An error output for a part that cannot run here, else None."""
        served = self.served.get(self._key(part))
        if served is None:
            served_here = ", ".join(self.served) or "none"
            return error_output(
                InvalidRequestError.code,
                f"task {part.task!r} is not served by this infer member (serves {served_here})",
            )
        if not part.input_ids:
            return error_output(InvalidRequestError.code, f"part {part.part} has no tokens")
        if len(part.input_ids) > served.model.meta.max_length:
            return error_output(
                TooLargeError.code,
                f"part {part.part} has {len(part.input_ids)} tokens; the model takes {served.model.meta.max_length}",
            )
        if part.token_type_ids is not None and len(part.token_type_ids) != len(part.input_ids):
            return error_output(
                InvalidRequestError.code, f"part {part.part}: token_type_ids and input_ids differ in length"
            )
        return None

    def _run_batch(self, batch: list[Part]) -> list[PartOutput]:
        served = self.served[self._key(batch[0])]
        began = time.perf_counter()
        try:
            outputs = _run(served, batch)
        except EPFail as exc:
            raise ProviderError(f"execution provider {served.model.provider} failed: {exc}", where=STAGE) from exc
        except MemoryError:
            raise
        except Exception as exc:  # ORT, padding or postprocessing: find the row(s) to blame
            if len(batch) == 1:
                part = batch[0]
                log.warning("request %s part %d failed in the model: %s", part.id, part.part, exc)
                return [error_output(ModelError.code, f"the model failed on part {part.part}: {exc}")]
            log.warning("a batch of %d %s parts failed (%s); retrying them one by one", len(batch), batch[0].task, exc)
            return [self._run_batch([part])[0] for part in batch]
        log.debug(
            "%s: %d rows × %d tokens in %.1f ms",
            batch[0].task, len(batch), max(len(p.input_ids) for p in batch), (time.perf_counter() - began) * 1000,
        )  # fmt: skip
        return outputs


def _run(served: Served, batch: list[Part]) -> list[PartOutput]:
    feeds = pad(batch, served.model.meta.pad_token_id, served.model.input_names)
    real = sum(len(p.input_ids) for p in batch)
    count_tokens(STAGE, real, len(batch) * max(len(p.input_ids) for p in batch) - real)
    outputs = served.task.postprocess(batch, served.model.run(feeds), served.runtime)
    if len(outputs) != len(batch):
        raise RuntimeError(f"postprocess returned {len(outputs)} outputs for {len(batch)} parts")
    return outputs


def _lost(part: Part) -> PartOutput:  # pragma: no cover - every index is filled above
    return error_output(ModelError.code, f"part {part.part} was not processed")


def build_infer(settings: Settings, tasks: Iterable[str] | None = None, *, unchecked: bool = False) -> Infer:
    """Load what infer needs for ``tasks`` (default: every task with a model configured).

    ``unchecked``: serve the int8 encoder even before its check passed (the check itself does).
    """
    names = list(tasks) if tasks is not None else [name for name in TASK_NAMES if settings.model_for(name)]
    loaded: dict[tuple[str, str], tuple[OrtModel, Tokenizer]] = {}
    served: dict[str, Served] = {}
    for name in names:
        task = get_task(name)
        prepared: dict[int, Served] = {}  # routes sharing one Settings share one runtime
        for route, routed in task_routes(name, settings).items():
            model_name = routed.model_for(name)
            if not model_name:
                raise ConfigError(f"task {name!r} has no model: set PIPELINE_{CATALOG[name].model.upper()}")
            key = (model_name, CATALOG[name].kind)
            if key not in loaded:
                exported = ensure_exported(model_name, name, settings)
                exported = encoder_variant(exported, model_name, settings, unchecked=unchecked)
                loaded[key] = (open_session(exported, settings), LazyTokenizer(exported.path))
            model, tokenizer = loaded[key]
            if id(routed) not in prepared:
                prepared[id(routed)] = Served(task, model, task.prepare(model, tokenizer, routed))
            served[route] = prepared[id(routed)]
            log.info("infer serves %s with %s on %s", route, model_name, model.provider)
    if not served:
        raise ConfigError("infer has no task to serve: set at least one PIPELINE_*_MODEL")
    return Infer(served, settings)


def build(settings: Settings) -> StageLogic:
    return StageLogic(InferRecords(build_infer(settings)))


# How much a new batch's time moves the estimate of the next one's.
EWMA_WEIGHT = 0.2


class InferRecords:
    """The record adapter: decode parts, shed those that cannot make their deadline, run the rest as one batch.

    A part that cannot be decoded is dead-lettered but not answered: its
    request is answered by merge at the deadline. A part whose deadline falls
    before this batch can be done (the deadline passed, or less time is left
    than batches take now) is not run: it gets a ``deadline_exceeded`` result
    at once, so merge answers its request right away and an overloaded infer
    spends the model on requests that can still be answered in time.
    """

    def __init__(self, infer: Infer) -> None:
        self.infer = infer
        self.batch_ms = 0.0  # moving estimate of how long a batch takes

    def __call__(self, records: Sequence[Record]) -> list[Output]:
        outputs: list[Output] = []
        parts: list[Part] = []
        headers: list[Headers] = []
        now = now_ms()
        for record in records:
            try:
                part = Part.decode(record.value)
            except RequestError as exc:
                outputs.extend(BAD.outputs(record, exc))
                continue
            header = Headers.parse(record.headers)
            left = left_ms(header.deadline_ms, now)
            if left is not None and left < self.batch_ms:
                batch = f"batches take {self.batch_ms:.0f} ms"
                why = f"{-left:.0f} ms past" if left <= 0 else f"{left:.0f} ms left, {batch}"
                shed = error_output(DeadlineExceededError.code, f"part {part.part} shed by infer: deadline {why}")
                outputs.append(_result(Result(part.id, part.task, part.part, part.of, shed), header))
                continue
            parts.append(part)
            headers.append(header)
        if parts:
            began = time.perf_counter()
            results = self.infer(parts)
            took = (time.perf_counter() - began) * 1000
            self.batch_ms = took if not self.batch_ms else (1 - EWMA_WEIGHT) * self.batch_ms + EWMA_WEIGHT * took
            outputs.extend(_result(result, header) for result, header in zip(results, headers, strict=True))
        return outputs


def _result(result: Result, headers: Headers) -> Output:
    return Output("results", result.id.encode(), result.encode(), headers.stamped(STAGE).to_list())
