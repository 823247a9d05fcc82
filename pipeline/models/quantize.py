"""Quantised variants of the chat decoder, made once next to ``model.onnx``, and how they compare with fp32.

Two variants, both made from the verified fp32 export:

* ``int4`` (``model.int4.onnx``): every MatMul weight of the layers as 4-bit
  blocks of 32 along the input (ONNX Runtime's ``MatMulNBits``, float32
  compute). Each block is stored as ``scale × (q - 8)`` plus a per-block
  offset, added back by a small extra MatMul on the activations' block sums:
  ``x·w = Σ_b scale_b·x_b·(q_b - 8) + offset_b·Σx_b``. Weights that came from
  a GGUF Q4_1 file (the default model) lie exactly on such a grid, so this
  variant holds *the same weights* as fp32 in a seventh of the bytes, and its
  greedy tokens agree with fp32's. Other weights get round-to-nearest 4-bit
  (lossy; the agreement measured says how much). The lm head (the widest
  MatMul) stays float32: ONNX Runtime's 8-bit MatMulNBits runs it 5× slower
  than float32 on this CPU (measured), and 4 bits would not be exact for
  SmolLM2's Q8_0 embedding.
* ``int8`` (``model.int8.onnx``): ONNX Runtime's dynamic quantisation
  (weights int8 per channel, activations quantised on the fly). The usual
  recipe; it changes the greedy path of a 135M model within a few tokens
  (measured in docs/models.md), because activations are quantised too.

``PIPELINE_CHAT_QUANTIZED=true`` runs ``int4``. :func:`compare` measures a
variant against fp32 side by side in one process: token agreement and speed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, ExportError
from pipeline.models.export import MODEL_FILE, ExportedModel

log = logging.getLogger("pipeline.models.quantize")

VARIANTS: dict[str, str] = {"fp32": MODEL_FILE, "int4": "model.int4.onnx", "int8": "model.int8.onnx"}
BLOCK = 32
# A block whose weights are further than this (relative to its scale) from the
# 4-bit grid rebuilt from its min and max was not on a grid: it is rounded.
GRID_TOLERANCE = 1e-3


def variant_file(exported: ExportedModel, variant: str) -> Path:
    """The graph file of ``variant`` (fp32, int4 or int8) in the export's folder, made now unless there."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown decoder variant {variant!r}; known: {', '.join(VARIANTS)}")
    out = exported.path / VARIANTS[variant]
    if out.is_file():
        return out
    began = time.monotonic()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if variant == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(exported.onnx_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        else:
            exact = quantize_blocks(exported.onnx_path, tmp)
            log.info("int4: %d of %d weight blocks were on a grid already (kept exactly)", exact[0], exact[1])
        os.replace(tmp, out)  # atomic: a reader sees the whole file or none
    finally:
        tmp.unlink(missing_ok=True)
    log.info("made %s in %.1f s", out, time.monotonic() - began)
    return out


def _blocks(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(codes (N, blocks, 32) uint8, scales (N, blocks), offsets (N, blocks), exact blocks, blocks) of a (K, N) weight.

    Asymmetric 4-bit from each block's min and max: GGUF Q4_1's grid.
    """
    k, n = weight.shape
    w = weight.T.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
    low, high = w.min(axis=2), w.max(axis=2)
    scale = (high - low) / 15
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint((w - low[..., None]) / safe[..., None]), 0, 15)
    offset = low + 8 * scale  # w = scale·(q - 8) + offset; 8 is MatMulNBits' zero point when none is given
    error = np.abs(scale[..., None] * (q - 8) + offset[..., None] - w).max(axis=2) / safe
    exact = int((error <= GRID_TOLERANCE).sum())
    return q.astype(np.uint8), scale.astype(np.float32), offset.astype(np.float32), exact, int(error.size)


def quantize_blocks(source: Path, out: Path) -> tuple[int, int]:
    """Write ``source`` with its MatMul weights as block-quantised MatMulNBits (see the module docstring).

    Returns (blocks kept exactly, blocks in all).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    vocab = max((int(i.dims[1]) for i in weights.values() if len(i.dims) == 2), default=0)
    nodes: list[Any] = []
    added: list[Any] = []
    sums: dict[int, str] = {}  # K -> the initializer summing an input's blocks
    replaced: set[str] = set()
    exact = total = 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or len(weight.dims) != 2 or weight.dims[0] % BLOCK:
            nodes.append(node)
            continue
        k, n = (int(d) for d in weight.dims)
        if n == vocab:  # the lm head stays float32 (see the module docstring)
            nodes.append(node)
            continue
        codes, scales, offsets, kept, blocks = _blocks(numpy_helper.to_array(weight))
        exact, total = exact + kept, total + blocks
        name = weight.name.replace("/", "_").replace(".", "_") or f"w{len(added)}"
        added += [
            numpy_helper.from_array(codes[..., 0::2] | (codes[..., 1::2] << 4), f"{name}_q4"),
            numpy_helper.from_array(scales.reshape(-1), f"{name}_scales"),
            numpy_helper.from_array(np.ascontiguousarray(offsets.T), f"{name}_offsets"),
        ]
        if k not in sums:  # (K, K/32) of ones: x · it = the sums of x's blocks
            summing = np.zeros((k, k // BLOCK), np.float32)
            summing[np.arange(k), np.arange(k) // BLOCK] = 1
            sums[k] = f"block_sums_{k}"
            added.append(numpy_helper.from_array(summing, sums[k]))
        x, y = node.input[0], node.output[0]
        nodes += [
            helper.make_node("MatMulNBits", [x, f"{name}_q4", f"{name}_scales"], [f"{y}_q4"], name=f"{node.name}_q4",
                             domain="com.microsoft", K=k, N=n, bits=4, block_size=BLOCK, accuracy_level=0),
            helper.make_node("MatMul", [x, sums[k]], [f"{y}_sums"], name=f"{node.name}_sums"),
            helper.make_node("MatMul", [f"{y}_sums", f"{name}_offsets"], [f"{y}_offset"], name=f"{node.name}_off"),
            helper.make_node("Add", [f"{y}_q4", f"{y}_offset"], [y], name=f"{node.name}_add"),
        ]  # fmt: skip
        replaced.add(weight.name)
    if not replaced:
        raise ExportError(f"{source} has no MatMul with a weight to quantise")
    still = {name for node in nodes for name in node.input}
    keep = [i for i in graph.initializer if i.name not in replaced or i.name in still]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend([*keep, *added])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out))
    return exact, total


@dataclass
class Comparison:
    """A variant against fp32 on the same greedy prompts, one at a time, in one process."""

    variant: str
    prompts: int
    tokens: int  # new tokens per prompt asked for
    agree_prefix: float  # share of fp32 tokens the variant matched before its first difference
    agree_all: float  # share of positions with the same token (positions past a difference included)
    identical: int  # prompts whose whole reply is identical
    fp32_tokens_per_s: float
    variant_tokens_per_s: float
    fp32_mb: float
    variant_mb: float

    def render(self) -> str:
        return (
            f"{self.variant} vs fp32 on {self.prompts} prompts × {self.tokens} tokens: {self.identical} replies "
            f"identical; agreement {self.agree_prefix:.3f} up to the first difference, {self.agree_all:.3f} of all "
            f"positions; {self.variant_tokens_per_s:.1f} vs {self.fp32_tokens_per_s:.1f} tokens/s "
            f"({self.variant_tokens_per_s / max(self.fp32_tokens_per_s, 1e-9):.2f}×); "
            f"{self.variant_mb:.0f} vs {self.fp32_mb:.0f} MB"
        )


def greedy_runs(exported: ExportedModel, variant: str, prompts: Sequence[Sequence[int]], tokens: int,
                threads: int = 0) -> tuple[list[list[int]], float]:  # fmt: skip
    """Each prompt's greedy tokens (end token ignored, so every run is ``tokens`` long) and tokens/s, one at a time."""
    from pipeline.models.generation import OrtEngine

    engine = OrtEngine(exported, model_file=variant_file(exported, variant).name, threads=threads)
    engine.eos = set()
    try:
        engine.submit(prompts[0], 2, lambda _t: True).result(600)  # warm up
        began, replies = time.perf_counter(), []
        for prompt in prompts:
            replies.append(engine.submit(prompt, tokens, lambda _t: True).result(600).tokens)
        return replies, sum(len(r) for r in replies) / (time.perf_counter() - began)
    finally:
        engine.close()


def agreement(reference: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> tuple[float, float, int]:
    """(share matched before the first difference, share of equal positions, identical replies)."""
    prefix = same = total = identical = 0
    for a, b in zip(reference, other, strict=True):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        prefix += n
        total += len(a)
        same += sum(x == y for x, y in zip(a, b, strict=False))
        identical += list(a) == list(b)
    return prefix / max(total, 1), same / max(total, 1), identical


def compare(exported: ExportedModel, variant: str, prompts: Sequence[Sequence[int]], tokens: int = 32,
            threads: int = 0) -> Comparison:  # fmt: skip
    """``variant`` against fp32, greedy on ``prompts`` (token ids), side by side."""
    fp32, fp32_rate = greedy_runs(exported, "fp32", prompts, tokens, threads)
    other, other_rate = greedy_runs(exported, variant, prompts, tokens, threads)
    prefix, same, identical = agreement(fp32, other)
    size = {v: variant_file(exported, v).stat().st_size / 1e6 for v in ("fp32", variant)}
    return Comparison(variant, len(prompts), tokens, prefix, same, identical, fp32_rate, other_rate,
                      size["fp32"], size[variant])  # fmt: skip
