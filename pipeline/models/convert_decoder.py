"""The torch side of the chat decoder's export: a KV-cache graph traced to ONNX and checked against PyTorch.

Runs only in the export child process (``python -m pipeline.models.export
--kind decoder``). The model is a Llama-architecture causal LM: a folder, or
a GGUF file that transformers dequantises to float32 (``gguf_file=``).

One graph does both phases of greedy generation:

* inputs ``input_ids`` (batch, new), ``attention_mask`` (batch, past + new),
  ``position_ids`` (batch, new) and, per layer ``i``,
  ``past_key_values.{i}.key`` / ``.value`` (batch, kv heads, past, head dim);
* outputs ``logits`` of the *last* position only (batch, vocab) and
  ``present.{i}.key`` / ``.value`` (batch, kv heads, past + new, head dim).

Prefill is a call with past length 0; each step after it feeds one token per
row and the previous call's presents as the pasts. Rows are left-padded (the
newest token is always the last column), so the last position's logits are
every row's next-token logits. Keys and values stay one tensor per layer, not
stacked: stacking would copy the whole cache once more on every step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from pipeline.errors import ExportError
from pipeline.models.convert import trace_export
from pipeline.models.export import MODEL_FILE, DecoderShape, ModelMeta, decoder_names

log = logging.getLogger("pipeline.models.convert_decoder")

# Largest |ONNX - PyTorch| accepted on the logits (order 10 for this kind of
# model: float32 summation order alone moves them by ~1e-5).
DECODER_ATOL = 1e-3


def from_pretrained_args(source: Path) -> tuple[str, dict[str, str]]:
    """from_pretrained's folder and extra arguments for a model folder or a GGUF file."""
    if source.suffix == ".gguf":
        return str(source.parent), {"gguf_file": source.name}
    return str(source), {}


def load_causal_lm(source: Path) -> tuple[Any, Any]:
    """(model in eval mode, float32, eager attention; its tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, extra = from_pretrained_args(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **extra)
        tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"cannot load {source} as a causal language model: {exc}") from exc
    return model.eval(), tokenizer


class DecoderWrapper(torch.nn.Module):
    """The graph's exact inputs and outputs around a transformers causal LM (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, layers: int) -> None:
        super().__init__()
        self.model = model
        self.layers = layers

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,  # the lm head on the last position only: prefill needs no more
            return_dict=True,
        )
        present = getattr(out, "cache", None) or out.past_key_values
        flat: list[torch.Tensor] = []
        for layer in present.layers[: self.layers]:
            flat.extend((layer.keys, layer.values))
        return (out.logits[:, -1, :], *flat)


def decoder_shape(config: Any, tokenizer: Any) -> DecoderShape:
    """Layers, heads and end tokens of the model, as the engine needs them."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    end = sorted({int(e) for e in [*eos, tokenizer.eos_token_id] if e is not None})
    return DecoderShape(
        layers=int(config.num_hidden_layers),
        kv_heads=int(config.num_key_value_heads),
        head_dim=int(head_dim),
        vocab_size=int(config.vocab_size),
        eos_token_ids=tuple(end),
    )


def sample_feeds(shape: DecoderShape, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A left-padded prefill (3 rows of 9, 5 and 1 tokens), then two steps on its cache, as feeds.

    Presents of each call are the pasts of the next, so the check covers both
    phases and ragged rows. The presents are filled in by :func:`verify`.
    """
    rng = np.random.default_rng(seed)
    lengths = (9, 5, 1)
    longest = max(lengths)
    ids = rng.integers(0, shape.vocab_size, (len(lengths), longest), dtype=np.int64)
    mask = np.zeros((len(lengths), longest), np.int64)
    positions = np.zeros((len(lengths), longest), np.int64)
    for row, n in enumerate(lengths):
        mask[row, longest - n :] = 1
        positions[row, longest - n :] = np.arange(n)
    empty = np.zeros((len(lengths), shape.kv_heads, 0, shape.head_dim), np.float32)
    feeds: list[dict[str, np.ndarray]] = [{"input_ids": ids, "attention_mask": mask, "position_ids": positions}]
    feeds[0].update({name: empty for name in decoder_names(shape.layers)[0][3:]})
    for step in range(2):
        total = longest + step + 1
        step_mask = np.zeros((len(lengths), total), np.int64)
        for row, n in enumerate(lengths):
            step_mask[row, total - n - step - 1 :] = 1
        feeds.append({
            "input_ids": rng.integers(0, shape.vocab_size, (len(lengths), 1), dtype=np.int64),
            "attention_mask": step_mask,
            "position_ids": np.array([[n + step] for n in lengths], np.int64),
        })  # fmt: skip
    return feeds


def verify(wrapper: DecoderWrapper, onnx_path: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """The largest |ONNX Runtime - PyTorch| on the logits of every call, the cache carried between calls."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    worst = 0.0
    past: list[np.ndarray] = []
    for feed in feeds:
        full = dict(feed)
        if past:
            full.update(zip(inputs[3:], past, strict=True))
        with torch.no_grad():
            expected = wrapper(*(torch.from_numpy(full[n]) for n in inputs))
        got = session.run(None, {n: full[n] for n in inputs})
        for want, have in zip(expected, got, strict=True):
            if tuple(want.shape) != have.shape:
                raise ExportError(f"ONNX output shape {have.shape} differs from PyTorch {tuple(want.shape)}")
        worst = max(worst, float(np.abs(expected[0].numpy() - got[0]).max()))
        past = [p.numpy() for p in expected[1:]]  # carry PyTorch's cache, so errors do not compound
    return worst


def check_wrapper(model: Any, wrapper: DecoderWrapper, vocab_size: int) -> None:
    """The wrapper's logits equal the model's own on an unpadded prompt (guards the wrapper, not ONNX)."""
    ids = torch.randint(0, vocab_size, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits[:, -1, :]
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        past = [torch.zeros(1, config.num_key_value_heads, 0, head_dim)] * (2 * wrapper.layers)
        got = wrapper(ids, torch.ones_like(ids), torch.arange(7)[None], *past)[0]
    diff = float((want - got).abs().max())
    if not diff <= DECODER_ATOL:
        raise ExportError(f"the export wrapper's logits differ from the model's by {diff:.3e}")


def convert_decoder(source: Path, model_name: str, out: Path, *, key: str = "") -> ModelMeta:
    """Export the causal LM at ``source`` into ``out``: model.onnx, meta.json and the tokenizer."""
    torch.manual_seed(0)
    model, tokenizer = load_causal_lm(source)
    config = model.config
    shape = decoder_shape(config, tokenizer)
    input_names, output_names = decoder_names(shape.layers)
    wrapper = DecoderWrapper(model, shape.layers).eval()
    check_wrapper(model, wrapper, shape.vocab_size)
    # Trace with a past and several new tokens, so neither length is frozen into the graph.
    batch, past, new = 2, 3, 4
    example = [
        torch.ones(batch, new, dtype=torch.long),
        torch.ones(batch, past + new, dtype=torch.long),
        torch.arange(past, past + new).repeat(batch, 1),
    ] + [torch.zeros(batch, shape.kv_heads, past, shape.head_dim) for _ in range(2 * shape.layers)]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "new"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "new"},
        "logits": {0: "batch"},
    }
    axes.update({name: {0: "batch", 2: "past"} for name in input_names[3:]})
    axes.update({name: {0: "batch", 2: "total"} for name in output_names[1:]})
    onnx_path = out / MODEL_FILE
    trace_export(wrapper, tuple(example), onnx_path, input_names, output_names, axes)
    max_diff = verify(wrapper, onnx_path, sample_feeds(shape))
    if not max_diff <= DECODER_ATOL:  # also catches NaN
        raise ExportError(
            f"ONNX logits of {model_name} differ from PyTorch by up to {max_diff:.3e} (allowed {DECODER_ATOL:.0e})"
        )
    tokenizer.save_pretrained(str(out))
    positions = int(getattr(config, "max_position_embeddings", 2048) or 2048)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else shape.eos_token_ids[0]
    meta = ModelMeta(
        task="decoder",
        model=model_name,
        input_names=input_names,
        output_names=output_names,
        labels=None,
        max_position_embeddings=positions,
        max_length=positions,
        pad_token_id=int(pad),
        max_diff=max_diff,
        key=key,
        decoder=shape,
    )
    meta.save(out)
    log.info("decoder of %s: %d layers, %d kv heads of %d; max diff %.2e", model_name, shape.layers,
             shape.kv_heads, shape.head_dim, max_diff)  # fmt: skip
    return meta
