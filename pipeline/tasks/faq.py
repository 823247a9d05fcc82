"""Customer-service FAQ: answer every sub-question of a message from a knowledge base.

split: one part per sentence of the message (:mod:`pipeline.tasks.sentences`),
so "How do I reset my password? And can I change my delivery address?" asks
two things and gets two answers. prepare: every question of every KB entry is
embedded once, with the same ONNX session, into a unit-length matrix.
postprocess: a sub-question's embedding, normalised, against that matrix
(cosine); an entry with several phrasings matches by its closest one.
merge: the answers in the order asked, and one reply text joining them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.messages import Part, Request, Result
from pipeline.models.batching import pad, plan_batches
from pipeline.models.packaged import prefixes_for
from pipeline.models.tokenizer import Tokenizer, model_max_length
from pipeline.settings import Settings
from pipeline.tasks.base import (
    AnswerResult,
    BaseTask,
    ModelOutputs,
    PartOutput,
    Runtime,
    l2_normalise,
    make_parts,
    require_text,
    rows,
    usable,
)
from pipeline.tasks.language import request_language, route_settings
from pipeline.tasks.sentences import split_sentences

if TYPE_CHECKING:
    from pipeline.models.session import OrtModel

FALLBACK = "Sorry, I don't have an answer to “{question}”. A colleague will get back to you."
FALLBACK_ZH = "抱歉，我没有找到“{question}”的答案，稍后会有同事联系您。"
NOTHING_ASKED = "Sorry, I could not find a question in your message."


class KbEntryLike(Protocol):
    """What faq reads from a knowledge-base entry (``pipeline.tasks.kb.KbEntry``)."""

    @property
    def id(self) -> str: ...
    @property
    def questions(self) -> Sequence[str]: ...
    @property
    def answer(self) -> str: ...


@dataclass(frozen=True)
class KbIndex:
    """Every KB question embedded: row i of ``matrix`` is ``questions[i]`` of entry ``entry_ids[i]``."""

    entry_ids: tuple[str, ...]
    questions: tuple[str, ...]
    answers: dict[str, str]
    matrix: np.ndarray  # (questions, dim), unit rows
    min_score: float

    def nearest(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For unit ``vectors`` (n, dim): the best question row of each and its cosine."""
        similarity = vectors @ self.matrix.T
        best = np.argmax(similarity, axis=1)
        return best, similarity[np.arange(len(best)), best]


class FaqTask(BaseTask):
    name: str = "faq"

    def split(self, request: Request, tokenizer: Tokenizer, settings: Settings) -> list[Part]:
        # ``tokenizer`` is the one of the request's route (pipeline.tasks.language);
        # each part carries the language, so infer runs it on that route's model.
        text = require_text(request, "text")
        lang = request_language(request)
        prefix, _ = prefixes_for(route_settings(request, settings).model_for(self.name))
        questions = split_sentences(text) or [text.strip()]
        encoding = _encode(tokenizer, [prefix + q for q in questions], settings)
        return make_parts(request, self.name, encoding, [{"question": q, "lang": lang} for q in questions])

    def prepare(self, model: OrtModel, tokenizer: Tokenizer, settings: Settings) -> Runtime:
        # ``settings`` are the route's: its faq_kb, its model's KB-question prefix.
        from pipeline.tasks.kb import load_kb

        _, prefix = prefixes_for(settings.model_for(self.name))
        kb = build_kb_index(load_kb(settings.faq_kb), model, tokenizer, settings, prefix=prefix)
        return Runtime(settings=settings, kb=kb)

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]:
        kb = runtime.kb
        if kb is None:
            raise RuntimeError("faq runtime has no knowledge base; build it with FaqTask.prepare")
        vectors = l2_normalise(outputs["embedding"][: len(parts)].astype(np.float64))
        best, scores = kb.nearest(vectors)

        def each(row: int, part: Part) -> PartOutput:
            if not np.isfinite(scores[row]):
                raise ValueError("the embedding is not finite")
            question_row = int(best[row])
            entry = kb.entry_ids[question_row]
            score = float(scores[row])
            return {
                "question": part.meta.get("question", ""),
                "entry": entry,
                "match": kb.questions[question_row],
                "answer": kb.answers[entry],
                "score": score,
                "matched": score >= kb.min_score,
            }

        return rows(parts, each)

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult:
        answers = [
            {key: r.output[key] for key in ("question", "entry", "match", "answer", "score", "matched")}
            for r in usable(results)
        ]
        return {"answers": answers, "reply": reply_text(answers)}


def build_kb_index(
    entries: Sequence[KbEntryLike], model: OrtModel, tokenizer: Tokenizer, settings: Settings, *, prefix: str = ""
) -> KbIndex:
    """Embed every question of every entry with ``model``, batched like live traffic.

    ``prefix`` goes before each question (e5's ``passage: ``), not into ``questions``.
    """
    entry_ids = tuple(entry.id for entry in entries for _ in entry.questions)
    questions = tuple(q for entry in entries for q in entry.questions)
    if not questions:
        raise ValueError("the knowledge base has no questions")
    encoding = _encode(tokenizer, [prefix + q for q in questions], settings)
    parts = make_parts(Request(id="kb", task="faq"), "faq", encoding, [{} for _ in questions])
    matrix = np.zeros((len(parts), 0))
    for batch in plan_batches(parts, settings.batch_max_parts, settings.batch_max_tokens):
        feeds = pad([parts[i] for i in batch], model.meta.pad_token_id, model.input_names)
        embedding = model.run(feeds)["embedding"].astype(np.float64)
        if matrix.shape[1] == 0:
            matrix = np.zeros((len(parts), embedding.shape[1]))
        matrix[batch] = embedding
    return KbIndex(
        entry_ids=entry_ids,
        questions=questions,
        answers={entry.id: entry.answer for entry in entries},
        matrix=l2_normalise(matrix),
        min_score=settings.faq_min_score,
    )


def reply_text(answers: Sequence[dict[str, Any]]) -> str:
    """One reply for the whole message: each distinct answer once, a fallback for what matched nothing."""
    lines: list[str] = []
    for answer in answers:
        if answer["matched"]:
            line = str(answer["answer"])
        else:
            template = FALLBACK_ZH if _is_chinese(str(answer["question"])) else FALLBACK
            line = template.format(question=answer["question"])
        if line not in lines:
            lines.append(line)
    return "\n\n".join(lines) if lines else NOTHING_ASKED


def _encode(tokenizer: Tokenizer, texts: list[str], settings: Settings) -> Any:
    # One sentence fits one model input; a longer one is cut, not split.
    length = min(settings.chunk_tokens, model_max_length(tokenizer))
    return tokenizer(texts, truncation=True, max_length=length)


def _is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)
