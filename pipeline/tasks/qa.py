"""Extractive question answering over a context of any length.

split: the context is cut into overlapping token windows (``qa_max_length``
tokens each including the question, ``qa_stride`` tokens shared between
neighbours), each window one part. A window's meta carries the character span
of every token in the ORIGINAL context (null for question and special tokens)
and the slice of the context it covers, so infer can turn token spans into
answer text without the whole context.

postprocess: the best span of each window (start <= end, at most
``qa_max_answer_tokens`` tokens, both ends in the context) scored by
start logit + end logit. Raw logits, not per-window softmax, so scores compare
across windows.

merge: the best-scoring span over all windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.errors import TooLargeError
from pipeline.messages import Part, Request, Result
from pipeline.models.tokenizer import Tokenizer, model_max_length
from pipeline.settings import Settings
from pipeline.tasks.base import (
    AnswerResult,
    BaseTask,
    ModelOutputs,
    PartOutput,
    Runtime,
    make_parts,
    require_text,
    rows,
    usable,
)

NO_ANSWER: PartOutput = {"answer": "", "start": None, "end": None, "score": None}


class QaTask(BaseTask):
    name: str = "qa"

    def split(self, request: Request, tokenizer: Tokenizer, settings: Settings) -> list[Part]:
        question = require_text(request, "question")
        context = require_text(request, "context")
        max_length = min(settings.split.qa_max_length, model_max_length(tokenizer))
        question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
        room = max_length - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
        if room <= settings.split.qa_stride:
            # The tokenizer cannot make windows that advance; say how long a question may be.
            limit = max_length - tokenizer.num_special_tokens_to_add(pair=True) - settings.split.qa_stride - 1
            raise TooLargeError(
                f"the question is {question_tokens} tokens; with qa_max_length={max_length} and "
                f"qa_stride={settings.split.qa_stride} it may be at most {limit}",
                request_id=request.id,
            )
        encoding = tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=max_length,
            stride=settings.split.qa_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        metas = [
            _window_meta(context, encoding["offset_mapping"][w], encoding.sequence_ids(w))
            for w in range(len(encoding["input_ids"]))
        ]
        return make_parts(request, self.name, encoding, metas)

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]:
        starts, ends = outputs["start_logits"], outputs["end_logits"]
        longest = runtime.settings.split.qa_max_answer_tokens

        def each(row: int, part: Part) -> PartOutput:
            n = len(part.input_ids)
            return best_span(part.meta, starts[row, :n], ends[row, :n], longest)

        return rows(parts, each)

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult:
        best: PartOutput = dict(NO_ANSWER)
        for result in usable(results):
            score = result.output.get("score")
            if score is not None and (best["score"] is None or score > best["score"]):
                best = {key: result.output[key] for key in ("answer", "start", "end", "score")}
        return best


def _window_meta(
    context: str, offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[int | None]
) -> dict[str, Any]:
    spans = [[start, end] if seq == 1 else None for (start, end), seq in zip(offsets, sequence_ids, strict=True)]
    inside = [span for span in spans if span is not None]
    first = min((s for s, _ in inside), default=0)
    last = max((e for _, e in inside), default=0)
    return {"offsets": spans, "context_start": first, "context_text": context[first:last]}


def best_span(meta: dict[str, Any], start_logits: np.ndarray, end_logits: np.ndarray, longest: int) -> PartOutput:
    """The highest start+end logit span of one window, in characters of the original context.

    Ties go to the earliest start, then the shortest span.
    """
    offsets = meta["offsets"]
    inside = np.array([i for i, span in enumerate(offsets) if span is not None], dtype=np.int64)
    if inside.size == 0:
        return dict(NO_ANSWER)
    # Context tokens are contiguous, so token distance is index distance within ``inside``.
    s = start_logits[inside].astype(np.float64)
    e = end_logits[inside].astype(np.float64)
    width = min(longest, inside.size)
    # scores[i, d]: the span from context token i to context token i + d.
    scores = np.full((inside.size, width), -np.inf)
    for offset in range(width):
        scores[: inside.size - offset, offset] = s[: inside.size - offset] + e[offset:]
    i, d = (int(x) for x in np.unravel_index(int(np.argmax(scores)), scores.shape))
    first, last = offsets[int(inside[i])], offsets[int(inside[i + d])]
    base = int(meta["context_start"])
    start, end = int(first[0]), int(last[1])
    return {
        "answer": meta["context_text"][start - base : end - base],
        "start": start,
        "end": end,
        "score": float(scores[i, d]),
    }
