"""Customer-service FAQ: answer every sub-question of a message from a knowledge base.

split: one part per sentence of the message (:mod:`pipeline.tasks.sentences`),
so "How do I reset my password? And can I change my delivery address?" asks
two things and gets two answers; a leading "And"/"Also," is dropped, and a
sentence with no topic of its own ("How long does that take?") is scored with
the one before it (:mod:`pipeline.tasks.faq.followup`). prepare: every question of every KB entry is
embedded once, with the same ONNX session, into a unit-length matrix, and so
are every entry's answer and title line (id words and keywords); a BM25 index
holds its words. postprocess: an entry's score fuses the sub-question's
cosine with its closest question, its answer and its title with the BM25
score of the sub-question's text (:mod:`pipeline.tasks.faq.retrieval`); below the
calibrated threshold the sub-question gets the fallback, and when the best
two entries are within the unsure margin the answer says so and offers both.
merge: the answers in the order asked, and one reply text joining them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.messages import Part, Request, Result
from pipeline.models.batching import pad, plan_batches
from pipeline.models.packaged import prefixes_for
from pipeline.models.tokenizer import Tokenizer, model_max_length
from pipeline.settings import FaqSettings, Settings
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
from pipeline.tasks.faq.followup import contexts, scoring_text, strip_lead_in
from pipeline.tasks.faq.retrieval import Lexical, Signals, Weights, best_per_entry, lexical_document, title_line
from pipeline.tasks.language import request_language, route_settings
from pipeline.tasks.sentences import split_sentences

if TYPE_CHECKING:
    from pipeline.models.session import OrtModel

FALLBACK = "Sorry, I don't have an answer to “{question}”. A colleague will get back to you."
FALLBACK_ZH = "抱歉，我没有找到“{question}”的答案，稍后会有同事联系您。"
NOTHING_ASKED = "Sorry, I could not find a question in your message."
UNSURE = "I'm not sure which you mean by “{question}”, so here are both:\n\n• {first}\n\n• {second}"
UNSURE_ZH = "我不确定您问的“{question}”是指哪一个，两个答案都给您：\n\n• {first}\n\n• {second}"


class KbEntryLike(Protocol):
    """What faq reads from a knowledge-base entry (``pipeline.tasks.faq.kb.KbEntry``)."""

    @property
    def id(self) -> str: ...
    @property
    def questions(self) -> Sequence[str]: ...
    @property
    def answer(self) -> str: ...


@dataclass(frozen=True)
class KbIndex:
    """The knowledge base ready to score: every question and answer embedded, and a BM25 index.

    Row i of ``matrix`` is ``questions[i]``, which belongs to entry ``entry_ids[i]``
    (``owner[i]`` is that entry's place in ``entries``); row j of
    ``answer_matrix`` is the answer of ``entries[j]``, row j of ``title_matrix``
    its title line.
    """

    entry_ids: tuple[str, ...]
    questions: tuple[str, ...]
    answers: dict[str, str]
    matrix: np.ndarray  # (questions, dim), unit rows
    min_score: float
    entries: tuple[str, ...] = ()
    owner: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    answer_matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    title_matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    lexical: Lexical | None = None
    weights: Weights = field(default_factory=Weights)
    unsure_margin: float = 0.0

    def nearest(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For unit ``vectors`` (n, dim): the best question row of each and its cosine."""
        similarity = vectors @ self.matrix.T
        best = np.argmax(similarity, axis=1)
        return best, similarity[np.arange(len(best)), best]

    def signals(self, vectors: np.ndarray, texts: Sequence[str], weights: Weights | None = None) -> Signals:
        """Every signal of unit ``vectors`` and their ``texts`` against every entry.

        With ``weights``, a signal they give no weight is left at zero and not
        computed (the BM25 pass is the costly one); calibration passes none.
        """
        questions, rows = best_per_entry(vectors @ self.matrix.T, self.owner, len(self.entries))
        zeros = np.zeros_like(questions)

        def wanted(weight: float, ready: bool) -> bool:
            return ready and (weights is None or weight != 0.0)

        w = weights or Weights()
        answer = vectors @ self.answer_matrix.T if wanted(w.answer, self.answer_matrix.size > 0) else zeros
        title = vectors @ self.title_matrix.T if wanted(w.title, self.title_matrix.size > 0) else zeros
        lexical = self.lexical.scores(texts) if self.lexical is not None and wanted(w.lexical, True) else zeros
        return Signals(questions=questions, answer=answer, title=title, lexical=lexical, rows=rows)

    def score(self, vectors: np.ndarray, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(messages, entries) fused scores, and for each entry the question row that matched best."""
        signals = self.signals(vectors, texts, self.weights)
        return signals.fuse(self.weights), signals.rows


class FaqTask(BaseTask):
    name: str = "faq"

    def split(self, request: Request, tokenizer: Tokenizer, settings: Settings) -> list[Part]:
        # ``tokenizer`` is the one of the request's route (pipeline.tasks.language);
        # each part carries the language, so infer runs it on that route's model.
        text = require_text(request, "text")
        lang = request_language(request)
        prefix, _ = prefixes_for(route_settings(request, settings).model_for(self.name))
        questions = [strip_lead_in(q) for q in split_sentences(text)] or [text.strip()]
        # A sub-question with no topic of its own ("how long does that take?") is scored with the one before it.
        carried = contexts(questions)
        texts, metas = [], []
        for question, context in zip(questions, carried, strict=True):
            texts.append(prefix + scoring_text(question, context))
            metas.append({"question": question, "lang": lang} | ({"context": context} if context else {}))
        return make_parts(request, self.name, _encode(tokenizer, texts, settings), metas)

    def prepare(self, model: OrtModel, tokenizer: Tokenizer, settings: Settings) -> Runtime:
        # ``settings`` are the route's: its faq_kb, its model's KB-question prefix.
        from pipeline.tasks.faq.kb import kb_synonyms, load_kb

        _, prefix = prefixes_for(settings.model_for(self.name))
        entries, synonyms = load_kb(settings.faq.faq_kb), kb_synonyms(settings.faq.faq_kb)
        kb = build_kb_index(entries, model, tokenizer, settings, prefix=prefix, synonyms=synonyms)
        return Runtime(settings=settings, kb=kb)

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]:
        kb = runtime.kb
        if kb is None:
            raise RuntimeError("faq runtime has no knowledge base; build it with FaqTask.prepare")
        vectors = l2_normalise(outputs["embedding"][: len(parts)].astype(np.float64))
        scores, matched_rows = kb.score(vectors, [part_text(p) for p in parts])

        def each(row: int, part: Part) -> PartOutput:
            if not np.all(np.isfinite(scores[row])):
                raise ValueError("the embedding is not finite")
            first, second = (int(i) for i in np.argsort(-scores[row])[:2])
            score = float(scores[row, first])
            output: PartOutput = {"question": part.meta.get("question", ""), **_entry(kb, row, first, scores,
                                  matched_rows), "matched": score >= kb.min_score}  # fmt: skip
            runner_up = float(scores[row, second])
            # Two entries this close: say so and offer both rather than guess.
            output["unsure"] = bool(output["matched"] and score - runner_up < kb.unsure_margin)
            if output["unsure"]:
                output["alternatives"] = [_entry(kb, row, second, scores, matched_rows)]
            return output

        return rows(parts, each)

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult:
        keys = ("question", "entry", "match", "answer", "score", "matched", "unsure", "alternatives")
        answers = [{key: r.output[key] for key in keys if key in r.output} for r in usable(results)]
        return {"answers": answers, "reply": reply_text(answers)}


def part_text(part: Part) -> str:
    """What a faq part is scored as: its sub-question, after the context split carried over to it, if any."""
    return scoring_text(str(part.meta.get("question", "")), str(part.meta.get("context", "")))


def _entry(kb: KbIndex, row: int, entry: int, scores: np.ndarray, matched_rows: np.ndarray) -> dict[str, Any]:
    entry_id = kb.entries[entry]
    question_row = int(matched_rows[row, entry])
    return {"entry": entry_id, "match": kb.questions[question_row], "answer": kb.answers[entry_id],
            "score": float(scores[row, entry])}  # fmt: skip


def build_kb_index(
    entries: Sequence[KbEntryLike],
    model: OrtModel,
    tokenizer: Tokenizer,
    settings: Settings,
    *,
    prefix: str = "",
    synonyms: Sequence[Sequence[str]] = (),
) -> KbIndex:
    """Embed every question of every entry with ``model``, batched like live traffic.

    ``prefix`` goes before each question (e5's ``passage: ``), not into ``questions``;
    ``synonyms`` are the KB's groups of words read as one by the lexical scoring.
    """
    from pipeline.tasks.faq.kb import places

    entry_ids = tuple(entry.id for entry in entries for _ in entry.questions)
    questions = tuple(q for entry in entries for q in entry.questions)
    if not questions:
        raise ValueError("the knowledge base has no questions")
    ids = tuple(entry.id for entry in entries)
    # Keywords are optional (a KB file may have none); entries built in code may lack the field.
    keywords = [tuple(getattr(entry, "keywords", ())) for entry in entries]
    matrix = _embed([prefix + q for q in questions], model, tokenizer, settings)
    answer_matrix = _embed([prefix + entry.answer for entry in entries], model, tokenizer, settings)
    titles = [prefix + title_line(entry.id, words) for entry, words in zip(entries, keywords, strict=True)]
    title_matrix = _embed(titles, model, tokenizer, settings)
    documents = [lexical_document(e.id, e.questions, k, places(e)) for e, k in zip(entries, keywords, strict=True)]
    return KbIndex(
        entry_ids=entry_ids,
        questions=questions,
        answers={entry.id: entry.answer for entry in entries},
        matrix=matrix,
        min_score=settings.faq.faq_min_score,
        entries=ids,
        owner=np.array([ids.index(e) for e in entry_ids], dtype=np.int64),
        answer_matrix=answer_matrix,
        title_matrix=title_matrix,
        lexical=Lexical(documents, synonyms=synonyms),
        weights=weights_of(settings.faq),
        unsure_margin=settings.faq.faq_unsure_margin,
    )


def weights_of(faq: FaqSettings) -> Weights:
    """The fusion weights ``settings`` name."""
    return Weights(
        answer=faq.faq_answer_weight,
        lexical=faq.faq_lexical_weight,
        title=faq.faq_title_weight,
    )


def _embed(texts: list[str], model: OrtModel, tokenizer: Tokenizer, settings: Settings) -> np.ndarray:
    """Unit embeddings of ``texts``, batched like live traffic; kept in the model cache across restarts."""
    from pipeline.models.embed_cache import cache_key, cached_matrix

    if not model.meta.key:  # an export without a key cannot name its cache entry
        return _embed_now(texts, model, tokenizer, settings)
    # The export's key covers its tokenizer (and so its length limit): a cache hit needs no tokenizer loaded.
    cut = {"chunk_tokens": settings.split.chunk_tokens, "batch_max_parts": settings.infer.batch_max_parts,
           "batch_max_tokens": settings.infer.batch_max_tokens}  # fmt: skip
    key = cache_key(model.meta.key, model.provider, texts, cut)
    folder = settings.models.model_cache_dir / "embeddings"
    return cached_matrix(folder, key, lambda: _embed_now(texts, model, tokenizer, settings))


def _embed_now(texts: list[str], model: OrtModel, tokenizer: Tokenizer, settings: Settings) -> np.ndarray:
    encoding = _encode(tokenizer, texts, settings)
    parts = make_parts(Request(id="kb", task="faq"), "faq", encoding, [{} for _ in texts])
    matrix = np.zeros((len(parts), 0))
    for batch in plan_batches(parts, settings.infer.batch_max_parts, settings.infer.batch_max_tokens):
        feeds = pad([parts[i] for i in batch], model.meta.pad_token_id, model.input_names)
        embedding = model.run(feeds)["embedding"].astype(np.float64)
        if matrix.shape[1] == 0:
            matrix = np.zeros((len(parts), embedding.shape[1]))
        matrix[batch] = embedding
    return l2_normalise(matrix)


def reply_text(answers: Sequence[dict[str, Any]]) -> str:
    """One reply for the whole message: each distinct answer once, a fallback for what matched nothing."""
    lines: list[str] = []
    for answer in answers:
        if answer.get("unsure") and answer.get("alternatives"):
            other = answer["alternatives"][0]
            template = UNSURE_ZH if _is_chinese(str(answer["question"])) else UNSURE
            line = template.format(question=answer["question"], first=answer["answer"], second=other["answer"])
        elif answer["matched"]:
            line = str(answer["answer"])
        else:
            template = FALLBACK_ZH if _is_chinese(str(answer["question"])) else FALLBACK
            line = template.format(question=answer["question"])
        if line not in lines:
            lines.append(line)
    return "\n\n".join(lines) if lines else NOTHING_ASKED


def _encode(tokenizer: Tokenizer, texts: list[str], settings: Settings) -> Any:
    # One sentence fits one model input; a longer one is cut, not split.
    length = min(settings.split.chunk_tokens, model_max_length(tokenizer))
    return tokenizer(texts, truncation=True, max_length=length)


def _is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)
