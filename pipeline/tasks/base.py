"""What every task is: split a request into parts, postprocess model rows, merge results.

A task is the pair (how to split, how to merge) around one model family. Its
three steps run in three different stages and processes:

* ``split`` (split stage): request → parts, tokenized, with ``meta`` holding
  whatever the later steps need (offsets, text slices, token counts);
* ``postprocess`` (infer stage): one batch of model outputs → one small JSON
  output per part, so results stay small and merge needs no model;
* ``merge`` (merge stage): the results of one request, sorted by part and
  possibly incomplete (a partial answer at the deadline) → the answer.

``prepare`` runs once when infer starts and builds the :class:`Runtime` that
postprocess reads (labels, the embedded faq knowledge base).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.errors import InvalidRequestError, ModelError
from pipeline.messages import Part, Request, Result
from pipeline.models.tokenizer import Tokenizer, model_max_length
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.models.session import OrtModel
    from pipeline.tasks.faq.task import KbIndex

PartOutput = dict[str, Any]
"""What infer's postprocess makes of one part (small JSON: a span, logits, an entry)."""
ModelOutputs = Mapping[str, np.ndarray]
"""One batch of ONNX Runtime outputs by output name."""
AnswerResult = dict[str, Any]
"""What a task's merge makes of a request's results: the answer's ``result``."""


@dataclass(frozen=True)
class Runtime:
    """What a task's postprocess needs beyond the model outputs, built once at start."""

    settings: Settings
    labels: tuple[str, ...] = ()
    kb: KbIndex | None = None


class Task(Protocol):
    name: str  # its fields, model setting and export kind are in pipeline.catalog

    def split(self, request: Request, tokenizer: Tokenizer, settings: Settings) -> list[Part]: ...

    def prepare(self, model: OrtModel, tokenizer: Tokenizer, settings: Settings) -> Runtime: ...

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]: ...

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult: ...


class BaseTask:
    """Shared defaults: a runtime with the model's labels."""

    name: str = ""

    def prepare(self, model: OrtModel, tokenizer: Tokenizer, settings: Settings) -> Runtime:
        return Runtime(settings=settings, labels=tuple(model.meta.labels or ()))


class ChunkedTask(BaseTask):
    """A task over token chunks of ``request.text`` (classify, embed)."""

    def split(self, request: Request, tokenizer: Tokenizer, settings: Settings) -> list[Part]:
        return split_chunks(request, self.name, tokenizer, settings)


# -- split helpers ----------------------------------------------------------------


def require_text(request: Request, field: str) -> str:
    """The request's ``field``, which must be present (it may be empty)."""
    value = getattr(request, field, None)
    if not isinstance(value, str):
        raise InvalidRequestError(f"task {request.task!r} needs field {field!r}", request_id=request.id)
    return value


def split_chunks(request: Request, task: str, tokenizer: Tokenizer, settings: Settings) -> list[Part]:
    """``request.text`` as consecutive token chunks of at most ``chunk_tokens`` (special tokens included).

    Each chunk is a complete model input ([CLS] ... [SEP]); meta has its token count.
    """
    text = require_text(request, "text")
    length = min(settings.split.chunk_tokens, model_max_length(tokenizer))
    if length <= tokenizer.num_special_tokens_to_add(pair=False):
        raise InvalidRequestError(
            f"chunk_tokens={settings.split.chunk_tokens} leaves no room for text", request_id=request.id
        )
    encoding = tokenizer(text, truncation=True, max_length=length, stride=0, return_overflowing_tokens=True)
    return make_parts(request, task, encoding, [{} for _ in encoding["input_ids"]])


def make_parts(request: Request, task: str, encoding: Any, metas: Sequence[dict[str, Any]]) -> list[Part]:
    """One part per encoded row, numbered in order; every meta gets the row's token count."""
    rows = encoding["input_ids"]
    types = encoding.get("token_type_ids")
    return [
        Part(
            id=request.id,
            task=task,
            part=index,
            of=len(rows),
            input_ids=list(ids),
            token_type_ids=list(types[index]) if types is not None else None,
            meta={**meta, "tokens": len(ids)},
        )
        for index, (ids, meta) in enumerate(zip(rows, metas, strict=True))
    ]


# -- postprocess helpers -------------------------------------------------------------


def error_output(code: str, message: str) -> PartOutput:
    """The output of a part that failed; merge answers its request with ``code``."""
    return {"error": {"code": code, "message": message}}


def rows(parts: Sequence[Part], each: Callable[[int, Part], PartOutput]) -> list[PartOutput]:
    """``each(row, part)`` for every row; a row that raises becomes an error output, not a failed batch."""
    outputs: list[PartOutput] = []
    for row, part in enumerate(parts):
        try:
            outputs.append(each(row, part))
        except Exception as exc:  # one bad row must not cost the others their results
            outputs.append(error_output(ModelError.code, f"postprocessing part {part.part} failed: {exc}"))
    return outputs


# -- merge helpers -------------------------------------------------------------------------


def usable(results: Sequence[Result]) -> list[Result]:
    """The results that carry an output (not an error), in part order."""
    return sorted((r for r in results if "error" not in r.output), key=lambda r: r.part)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return np.asarray(shifted / shifted.sum())


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12))
