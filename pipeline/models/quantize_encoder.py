"""The int8 sentence encoder (embed, faq, chat retrieval): made on request, served only once it passed its check.

``pipeline model export --task embed --quantize int8`` writes
``model.int8.onnx`` next to the verified fp32 export (ONNX Runtime dynamic
quantisation of the MatMul weights, int8 per channel; activations quantised
on the fly) and
checks it against fp32 in this process:

* **embeddings**: the cosine between the int8 and fp32 embedding of each
  check text (the faq evaluation questions and knowledge-base texts); the
  lowest must be at least :data:`MIN_COSINE`;
* **faq**: top-1 on the held-out faq evaluation set within
  :data:`MAX_TOP1_LOSS` question(s) of fp32's.

The outcome is written to ``int8.check.json``. Infer runs the int8 graph only
when ``PIPELINE_ENCODER_INT8=true`` *and* that file says the check passed;
otherwise it refuses to start, saying which command makes or checks it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import orjson

from pipeline.errors import ConfigError
from pipeline.models.export import MODEL_FILE, ExportedModel
from pipeline.settings import Settings

INT8_FILE = "model.int8.onnx"
CHECK_FILE = "int8.check.json"
MIN_COSINE = 0.99
MAX_TOP1_LOSS = 1


@dataclass(frozen=True, slots=True)
class VariantModel(ExportedModel):
    """An export served from another graph file in its folder (the int8 one)."""

    file: str = MODEL_FILE

    @property
    def onnx_path(self) -> Path:
        return self.path / self.file


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


def int8_file(exported: ExportedModel) -> Path:
    return exported.path / INT8_FILE


def quantize_encoder(exported: ExportedModel) -> Path:
    """``model.int8.onnx`` made from the fp32 export (once; atomically, so readers see all of it or none)."""
    out = int8_file(exported)
    if out.is_file():
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        quantize_dynamic(str(exported.onnx_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=kept_fp32(exported.onnx_path))  # fmt: skip
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def kept_fp32(onnx_path: Path) -> list[str]:
    """MatMuls left in fp32: each layer's feed-forward output, and the whole last layer.

    Measured on all-MiniLM-L6-v2 over the faq questions (lowest cosine to fp32):
    ORT's default recipe (every MatMul and the embedding Gather) 0.980; MatMuls
    only 0.983; without the feed-forward outputs (whose inputs, after GELU,
    have the widest range) 0.990; and without the last layer too 0.991. Names
    follow the transformers BERT export; other graphs keep every MatMul int8
    and the check decides.
    """
    import onnx

    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node if n.op_type == "MatMul"]
    layers = [int(m.group(1)) for n in names if (m := re.search(r"/layer\.(\d+)/", n))]
    last = f"/layer.{max(layers)}/" if layers else None
    return [n for n in names if ("/output/dense/" in n and "/attention/" not in n) or (last and last in n)]


def check_encoder(exported: ExportedModel, settings: Settings) -> EncoderCheck:
    """Compare int8 with fp32 (embeddings and faq top-1), write ``int8.check.json``, return the outcome."""
    from pipeline.evaluation import evaluate, load_sets, offline_answerer
    from pipeline.models.session import feeds, ort_session
    from pipeline.models.tokenizer import load_tokenizer
    from pipeline.stages.infer import build_infer
    from pipeline.tasks.kb import load_eval

    _, test = load_sets()
    texts = [q for q, _ in test] + [q for q, _ in load_eval(Path(settings.faq_kb).parent / "faq_eval.json")]
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
    english = replace(settings, faq_multilingual_model="", provider="cpu")
    hits = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        infer = build_infer(replace(english, encoder_int8=int8), tasks=["faq"], unchecked=True)
        hits[name] = evaluate(test, offline_answerer(english, infer)).hits
    check = EncoderCheck(float(cosines.min()), float(cosines.mean()), len(texts), hits["fp32"], hits["int8"],
                         len(test), speed["fp32"], speed["int8"])  # fmt: skip
    (exported.path / CHECK_FILE).write_bytes(orjson.dumps({**asdict(check), "passed": check.passed}))
    return check


def encoder_variant(
    exported: ExportedModel, model: str, settings: Settings, *, unchecked: bool = False
) -> ExportedModel:
    """The graph infer serves for the export of ``model``: int8 when asked for and checked, else as it is.

    Only the sentence encoder (``embed_model``, which faq and chat share by
    default) has an int8 variant; the multilingual faq model stays fp32.
    """
    if not settings.encoder_int8 or exported.meta.task != "embed" or model != settings.embed_model:
        return exported
    path, check = int8_file(exported), exported.path / CHECK_FILE
    if not unchecked:
        why = "" if path.is_file() else f"{path} does not exist"
        if not why and not (check.is_file() and orjson.loads(check.read_bytes()).get("passed")):
            why = f"{check} does not say its accuracy check passed"
        if why:
            raise ConfigError(
                f"PIPELINE_ENCODER_INT8=true but {why}; run `pipeline model export --task embed --quantize int8` "
                "(it makes and checks the int8 graph) or unset it"
            )
    return VariantModel(exported.path, exported.meta, exported.from_cache, INT8_FILE)
