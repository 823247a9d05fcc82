"""The int8 sentence encoder (embed, faq, chat retrieval): made on request, served only once it passed its check.

``pipeline model export --task embed --quantize int8`` writes
``model.int8.onnx`` next to the verified fp32 export (ONNX Runtime dynamic
quantisation of the MatMul weights, int8 per channel; activations quantised
on the fly) and
checks it against fp32 in this process
(:func:`pipeline.tools.quality.check_encoder.check_encoder`):

* **embeddings**: the cosine between the int8 and fp32 embedding of each
  check text (the faq evaluation questions and knowledge-base texts); the
  lowest must be at least :data:`~pipeline.tools.quality.check_encoder.MIN_COSINE`;
* **faq**: top-1 on the held-out faq evaluation set within
  :data:`~pipeline.tools.quality.check_encoder.MAX_TOP1_LOSS` question(s) of fp32's.

The outcome is written to ``int8.check.json``. Infer runs the int8 graph only
when ``PIPELINE_ENCODER_INT8=true`` *and* that file says the check passed;
otherwise it refuses to start, saying which command makes or checks it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.errors import ConfigError
from pipeline.models.export import MODEL_FILE, ExportedModel
from pipeline.settings import Settings

INT8_FILE = "model.int8.onnx"
CHECK_FILE = "int8.check.json"


@dataclass(frozen=True, slots=True)
class VariantModel(ExportedModel):
    """An export served from another graph file in its folder (the int8 one)."""

    file: str = MODEL_FILE

    @property
    def onnx_path(self) -> Path:
        return self.path / self.file


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


def encoder_variant(
    exported: ExportedModel, model: str, settings: Settings, *, unchecked: bool = False
) -> ExportedModel:
    """The graph infer serves for the export of ``model``: int8 when asked for and checked, else as it is.

    Only the sentence encoder (``embed_model``, which faq and chat share by
    default) has an int8 variant; the multilingual faq model stays fp32.
    """
    if not settings.models.encoder_int8 or exported.meta.task != "embed" or model != settings.models.embed_model:
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
