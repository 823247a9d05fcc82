"""split: scatter one request into independent, tokenized parts.

How a request is cut depends on its task (context windows, text chunks,
sub-questions; see ``pipeline.tasks``). Tokenizing happens here so infer only
pads and runs. Besides the parts, split tells merge what to expect: a control
record on ``results`` with the number of parts and the deadline, so merge can
answer on time even when no part ever comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.catalog import CATALOG, TASK_NAMES
from pipeline.errors import InvalidRequestError
from pipeline.messages import Control, Expect, Headers, Request
from pipeline.records import Output, Record, StageLogic
from pipeline.settings import Settings
from pipeline.stages.base import BadRecords
from pipeline.tasks import get_task
from pipeline.tasks.language import request_route, task_routes

STAGE = "split"
BAD = BadRecords(STAGE, answers=True)  # a bad request is answered and dead-lettered


@dataclass
class Splitter:
    """The split stage's core, holding one tokenizer per enabled task."""

    settings: Settings
    tokenizers: dict[str, Any]

    def __call__(self, records: Sequence[Record]) -> list[Output]:
        return BAD.each(records, self.split_one)

    def split_one(self, record: Record) -> list[Output]:
        request = Request.decode(record.value)
        tokenizer = self.tokenizers.get(request_route(request, self.settings))
        if tokenizer is None:
            raise InvalidRequestError(
                f"task {request.task!r} is not enabled on this split member", request_id=request.id
            )
        task = get_task(request.task)
        for name in CATALOG[request.task].fields:  # filter checked them; a record written past it may not be
            if not getattr(request, name):
                raise InvalidRequestError(f"task {request.task!r} needs a non-empty {name!r}", request_id=request.id)
        parts = task.split(request, tokenizer, self.settings)
        if not parts:
            raise InvalidRequestError("the request has nothing to process after tokenizing", request_id=request.id)
        headers = Headers.parse(record.headers).stamped(STAGE)
        header_list = headers.to_list()
        outputs = [Output("parts", part.key.encode(), part.encode(), header_list) for part in parts]
        expect = Expect(request.id, request.task, len(parts)).encode()
        outputs.append(Output("results", request.id.encode(), expect, [*header_list, Control.EXPECT.header()]))
        return outputs


def build(settings: Settings) -> StageLogic:
    return StageLogic(build_split(settings))


def build_split(settings: Settings) -> Splitter:
    """Load a tokenizer for every task that has a model configured."""
    from pipeline.models.packaged import local_model
    from pipeline.models.tokenizer import load_tokenizer

    tokenizers: dict[str, Any] = {}
    by_path: dict[str, Any] = {}
    for task in TASK_NAMES:
        for route, routed in task_routes(task, settings).items():  # faq: one per language pair
            path = local_model(routed.model_for(task), settings.models.model_cache_dir)
            if path:
                if path not in by_path:
                    by_path[path] = load_tokenizer(path)
                tokenizers[route] = by_path[path]
    return Splitter(settings, tokenizers)
