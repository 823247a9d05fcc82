"""An int8 variant of the chat decoder, and how far it agrees with fp32 and how much faster it is.

ONNX Runtime's dynamic quantisation (weights of MatMul/Gemm as int8,
activations quantised on the fly) turns ``decoder.onnx`` into
``decoder.int8.onnx`` next to it, once. :func:`compare` runs the same greedy
prompts through both in one process, side by side, and reports token
agreement (the share of positions where the int8 model picked the fp32
model's token, up to the first difference, and over all positions) and the
speed of each. ``PIPELINE_CHAT_QUANTIZED=true`` makes the generate stage use
the int8 file; ``pipeline model export --task chat --quantize int8`` makes it
and prints the comparison.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline.models.quantize")

FP32 = "decoder.onnx"
INT8 = "decoder.int8.onnx"


def ensure_int8(folder: Path) -> Path:
    """``decoder.int8.onnx`` in the export folder (made now unless there)."""
    out = folder / INT8
    if out.exists():
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    began = time.monotonic()
    tmp = folder / f"{INT8}.tmp"
    quantize_dynamic(str(folder / FP32), str(tmp), weight_type=QuantType.QInt8)
    tmp.rename(out)
    log.info("quantised %s to int8 in %.1f s", folder, time.monotonic() - began)
    return out


@dataclass
class Comparison:
    prompts: int
    tokens: int  # new tokens per prompt asked for
    agree_prefix: float  # share of fp32 tokens the int8 model matched before its first difference
    agree_all: float  # share of positions with the same token (positions past a difference included)
    fp32_tokens_per_s: float
    int8_tokens_per_s: float
    fp32_mb: float
    int8_mb: float

    def render(self) -> str:
        return (
            f"int8 vs fp32 on {self.prompts} prompts × {self.tokens} tokens: agreement {self.agree_prefix:.3f} "
            f"up to the first difference, {self.agree_all:.3f} of all positions; "
            f"{self.int8_tokens_per_s:.1f} vs {self.fp32_tokens_per_s:.1f} tokens/s "
            f"({self.int8_tokens_per_s / self.fp32_tokens_per_s:.2f}×); {self.int8_mb:.0f} vs {self.fp32_mb:.0f} MB"
        )


def compare(folder: Path, tokenizer: Any, prompts: Sequence[str], tokens: int = 32) -> Comparison:
    """Greedy replies to ``prompts`` from fp32 and int8, one prompt at a time, in this process."""
    from pipeline.models.generation import OrtEngine

    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]  # fmt: skip
    ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    runs: dict[str, tuple[list[list[int]], float]] = {}
    for name in (FP32, INT8):
        engine = OrtEngine(folder, decoder=name)
        try:
            began, replies = time.perf_counter(), []
            for prompt in ids:
                replies.append(engine.submit(prompt, tokens, lambda _t: True).result(600).tokens)
            runs[name] = (replies, sum(len(r) for r in replies) / (time.perf_counter() - began))
        finally:
            engine.close()
    (fp32, fp32_rate), (int8, int8_rate) = runs[FP32], runs[INT8]
    prefix = total = same = 0
    for a, b in zip(fp32, int8, strict=True):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        prefix += n
        total += len(a)
        same += sum(x == y for x, y in zip(a, b, strict=False))
    size = {name: (folder / name).stat().st_size / 1e6 for name in (FP32, INT8)}
    return Comparison(len(prompts), tokens, prefix / max(total, 1), same / max(total, 1), fp32_rate, int8_rate,
                      size[FP32], size[INT8])  # fmt: skip
