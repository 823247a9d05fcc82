"""Is the int8 sentence encoder good enough to serve? It against fp32, on the same inputs.

``pipeline model export --task embed --quantize int8`` makes the int8 graph
(:func:`pipeline.models.quantize_encoder.quantize_encoder`) and then runs
:func:`check_encoder`, which writes ``int8.check.json`` beside it; infer
serves the int8 graph only when that file says the check passed
(:func:`pipeline.models.quantize_encoder.encoder_variant`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson

from pipeline.models.export import ExportedModel
from pipeline.models.quantize_encoder import CHECK_FILE, int8_file
from pipeline.models.session import feeds, ort_session
from pipeline.models.tokenizer import load_tokenizer
from pipeline.settings import Settings
from pipeline.stages.infer import build_infer
from pipeline.tasks.faq.kb import load_eval
from pipeline.tools.quality.evaluation import evaluate, load_sets, offline_answerer

MIN_COSINE = 0.99
MAX_TOP1_LOSS = 1


@dataclass(frozen=True)
class EncoderCheck:
    """int8 against fp32 on the same inputs, in one process."""

    min_cosine: float
    mean_cosine: float
    texts: int
    top1_fp32: int
    top1_int8: int
    questions: int
    fp32_texts_per_s: float
    int8_texts_per_s: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.top1_int8 >= self.top1_fp32 - MAX_TOP1_LOSS

    def render(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"int8 check {verdict}: embedding cosine to fp32 min {self.min_cosine:.4f} / mean {self.mean_cosine:.4f} "
            f"over {self.texts} texts (need >= {MIN_COSINE}); faq top-1 {self.top1_int8}/{self.questions} vs fp32 "
            f"{self.top1_fp32}/{self.questions} (may lose {MAX_TOP1_LOSS}); batch 32: "
            f"{self.int8_texts_per_s:.0f} vs {self.fp32_texts_per_s:.0f} texts/s"
        )


def check_encoder(exported: ExportedModel, settings: Settings) -> EncoderCheck:
    """Compare int8 with fp32 (embeddings and faq top-1), write ``int8.check.json``, return the outcome."""
    _, test = load_sets()
    texts = [q for q, _ in test] + [q for q, _ in load_eval(Path(settings.faq.faq_kb).parent / "faq_eval.json")]
    tokenizer = load_tokenizer(exported.path)
    threads = len(os.sched_getaffinity(0))
    vectors, speed = {}, {}
    for name, path in (("fp32", exported.onnx_path), ("int8", int8_file(exported))):
        session = ort_session(path, threads)
        names = [i.name for i in session.get_inputs()]
        batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
        began = time.perf_counter()
        vectors[name] = np.concatenate([session.run(None, feeds(tokenizer, b, names))[0] for b in batches])
        speed[name] = len(texts) / (time.perf_counter() - began)
    a, b = vectors["fp32"], vectors["int8"]
    cosines = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    # The int8 graph is the English encoder's; on the CPU, where it runs.
    english = settings.replace(faq_multilingual_model="", provider="cpu")
    hits = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        infer = build_infer(english.replace(encoder_int8=int8), tasks=["faq"], unchecked=True)
        hits[name] = evaluate(test, offline_answerer(english, infer)).hits
    check = EncoderCheck(float(cosines.min()), float(cosines.mean()), len(texts), hits["fp32"], hits["int8"],
                         len(test), speed["fp32"], speed["int8"])  # fmt: skip
    (exported.path / CHECK_FILE).write_bytes(orjson.dumps({**asdict(check), "passed": check.passed}))
    return check
