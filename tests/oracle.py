"""The correctness oracle: each task answered by the PyTorch model in one process.

The design's promise is that a distributed answer equals the answer of the
same model run in one process on the whole input. These functions are that
one-process answer, written independently of the pipeline's code: PyTorch,
not ONNX; one window or chunk at a time, never padded or batched across
requests; chunking by slicing the token list, not by the tokenizer's
overflow; QA span search by plain loops over every window; faq by scoring
each entry directly (its questions, answer and title embedded one at a time,
the fusion written out here). The pieces shared with the pipeline are the
sentence splitter faq uses to find sub-questions, and faq's lexical scorer and
the text it reads per entry (BM25 from ``bm25s``, plain Python with no model
in it): those are the task's definition, not something to get right twice.

Used by the unit tests (split → infer → merge in one process) and the
integration tests (the same requests through Kafka).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.settings import Settings
from pipeline.tasks.sentences import split_sentences


@functools.lru_cache(maxsize=8)
def _tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@functools.lru_cache(maxsize=8)
def _model(model_dir: str, kind: str) -> Any:
    from transformers import AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    loader = {"qa": AutoModelForQuestionAnswering, "classify": AutoModelForSequenceClassification}.get(kind, AutoModel)
    return loader.from_pretrained(model_dir, dtype=torch.float32).eval()


def _chunks(model_dir: str, text: str, chunk_tokens: int) -> list[list[int]]:
    """Complete model inputs ([CLS] piece [SEP]) of at most ``chunk_tokens`` tokens covering ``text``."""
    tokenizer = _tokenizer(model_dir)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    step = chunk_tokens - 2
    pieces = [ids[i : i + step] for i in range(0, len(ids), step)] or [[]]
    return [[tokenizer.cls_token_id, *piece, tokenizer.sep_token_id] for piece in pieces]


def _run(model: Any, ids: list[int]) -> Any:
    with torch.no_grad(), _one_thread():
        return model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Small single-row forwards run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reference_qa(model_dir: Path, question: str, context: str, settings: Settings) -> dict[str, Any]:
    """The best span over every window: ``{"answer", "start", "end", "score"}`` (chars of ``context``)."""
    tokenizer, model = _tokenizer(str(model_dir)), _model(str(model_dir), "qa")
    encoding = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=settings.split.qa_max_length,
        stride=settings.split.qa_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    best: tuple[float, int, int] | None = None
    for window, ids in enumerate(encoding["input_ids"]):
        with torch.no_grad(), _one_thread():
            out = model(
                input_ids=torch.tensor([ids]),
                token_type_ids=torch.tensor([encoding["token_type_ids"][window]]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            )
        start, end = out.start_logits[0].tolist(), out.end_logits[0].tolist()
        offsets = encoding["offset_mapping"][window]
        in_context = [i for i, seq in enumerate(encoding.sequence_ids(window)) if seq == 1]
        for i in in_context:
            for j in in_context:
                if i <= j < i + settings.split.qa_max_answer_tokens:
                    score = start[i] + end[j]
                    if best is None or score > best[0]:
                        best = (score, offsets[i][0], offsets[j][1])
    if best is None:
        return {"answer": "", "start": None, "end": None, "score": None}
    score, first, last = best
    return {"answer": context[first:last], "start": first, "end": last, "score": score}


def reference_classify(model_dir: Path, text: str, settings: Settings) -> dict[str, Any]:
    """Mean of the chunk logits, softmax: ``{"label", "score", "probabilities"}``."""
    model = _model(str(model_dir), "classify")
    logits = torch.stack(
        [_run(model, ids).logits[0] for ids in _chunks(str(model_dir), text, settings.split.chunk_tokens)]
    )
    probabilities = torch.softmax(logits.double().mean(dim=0), dim=0)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    best = int(torch.argmax(probabilities))
    return {
        "label": labels[best],
        "score": float(probabilities[best]),
        "probabilities": {label: float(p) for label, p in zip(labels, probabilities, strict=True)},
    }


def reference_embed(model_dir: Path, text: str, settings: Settings) -> np.ndarray:
    """The mean of every token's last hidden state over all chunks, L2-normalised."""
    model = _model(str(model_dir), "embed")
    states = [
        _run(model, ids).last_hidden_state[0] for ids in _chunks(str(model_dir), text, settings.split.chunk_tokens)
    ]
    mean = torch.cat(states).double().mean(dim=0)
    return torch.nn.functional.normalize(mean, dim=0).numpy()


@functools.lru_cache(maxsize=4096)
def _sentence_vector(model_dir: str, text: str, chunk_tokens: int) -> torch.Tensor:
    tokenizer, model = _tokenizer(model_dir), _model(model_dir, "embed")
    ids = tokenizer(text, truncation=True, max_length=chunk_tokens)["input_ids"]
    state = _run(model, ids).last_hidden_state[0].double().mean(dim=0)
    return torch.nn.functional.normalize(state, dim=0)


def reference_faq(model_dir: Path, kb: Path | Sequence[Any], text: str, settings: Settings) -> list[str]:
    """The id of the best KB entry for each sub-question, in order, scored as ``settings`` weigh it.

    An entry's score is ``wq·q + wa·a + wt·t + wl·l``: ``q`` its closest
    question's cosine, ``a`` and ``t`` the cosines with its answer and its
    title line, ``l`` the saturated BM25 score (pipeline.tasks.faq.retrieval).
    ``kb`` is a knowledge-base file (read with ``load_kb``) or entries with
    ``id``, ``questions`` and ``answer`` (``keywords`` optional).
    """
    from pipeline.tasks.faq.kb import kb_synonyms, load_kb, places
    from pipeline.tasks.faq.retrieval import Lexical, lexical_document, title_line

    synonyms: tuple[tuple[str, ...], ...] = ()
    if isinstance(kb, str | Path):
        synonyms = kb_synonyms(Path(kb))
        kb = load_kb(Path(kb))
    wa, wl, wt = settings.faq.faq_answer_weight, settings.faq.faq_lexical_weight, settings.faq.faq_title_weight
    wq = 1.0 - wa - wl - wt

    def vector(sentence: str) -> torch.Tensor:
        return _sentence_vector(str(model_dir), sentence, settings.split.chunk_tokens)

    questions = split_sentences(text) or [text.strip()]
    asked = torch.stack([vector(q) for q in questions])
    keywords = [tuple(getattr(entry, "keywords", ())) for entry in kb]
    documents = [lexical_document(e.id, e.questions, k, places(e)) for e, k in zip(kb, keywords, strict=True)]
    lexical = Lexical(documents, synonyms=synonyms)
    lexical_scores = lexical.scores(questions)
    best: list[tuple[float, str] | None] = [None] * len(questions)
    for column, (entry, words) in enumerate(zip(kb, keywords, strict=True)):
        known = torch.stack([vector(q) for q in entry.questions])
        closest = (asked @ known.T).max(dim=1).values
        answer = asked @ vector(entry.answer)
        title = asked @ vector(title_line(entry.id, words))
        scores = (wq * closest + wa * answer + wt * title).tolist()
        for row, score in enumerate(scores):
            score += wl * float(lexical_scores[row, column])
            current = best[row]
            if current is None or score > current[0]:
                best[row] = (score, entry.id)
    return [b[1] for b in best if b is not None]
