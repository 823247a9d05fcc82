"""The torch side of the export: wrap the model, trace it to ONNX, check it against PyTorch.

Runs only in the export child process (``python -m pipeline.models.export``);
serving processes never import this module. The graph takes ``input_ids``,
``attention_mask`` (and ``token_type_ids`` when the model uses them) with
dynamic batch and sequence axes, and returns, by kind:

* ``qa``: ``start_logits``, ``end_logits`` (batch, sequence)
* ``classify``: ``logits`` (batch, labels)
* ``embed``: ``embedding`` (batch, hidden): the attention-mask weighted mean of
  the last hidden state, unnormalised, so a chunk's embedding can be averaged
  with others by token count before normalising.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from pipeline.errors import ExportError
from pipeline.models.export import MODEL_FILE, OPSET, OUTPUT_NAMES, VERIFY_ATOL, ModelMeta

log = logging.getLogger("pipeline.models.convert")

_LOADERS: dict[str, Any] = {
    "qa": AutoModelForQuestionAnswering,
    "classify": AutoModelForSequenceClassification,
    "embed": AutoModel,
}
# Token ids beyond this many in a tokenizer's model_max_length mean "no limit set".
_NO_LIMIT = 1_000_000


class ExportWrapper(torch.nn.Module):
    """A thin module with the graph's exact inputs and outputs around a transformers model."""

    def __init__(self, model: torch.nn.Module, kind: str, token_types: bool) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.token_types = token_types

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs, return_dict=True)
        if self.kind == "qa":
            return out.start_logits, out.end_logits
        if self.kind == "classify":
            return (out.logits,)
        hidden = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9),)


def load_model(source: Path, kind: str) -> torch.nn.Module:
    """The PyTorch model for ``kind``, in eval mode and float32.

    Eager attention: it traces to plain ONNX ops whatever the padding, where
    the fused (sdpa) path has branches that tracing would freeze.
    """
    loader = _LOADERS[kind]
    try:
        model = loader.from_pretrained(str(source), attn_implementation="eager", dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"cannot load {source} as a {loader.__name__} model: {exc}") from exc
    return model.eval()


def uses_token_types(model: torch.nn.Module, tokenizer: Any) -> bool:
    """Whether the graph takes token_type_ids: the model accepts them and the tokenizer makes them."""
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    return accepts and "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def max_length_of(config: Any, tokenizer: Any) -> tuple[int, int]:
    """(max_position_embeddings, the longest input that really fits)."""
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    usable = positions
    if "roberta" in str(getattr(config, "model_type", "")):
        usable -= 2  # positions start after the padding index
    limit = int(getattr(tokenizer, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
    if limit < _NO_LIMIT:
        usable = min(usable, limit)
    return positions, usable


def sample_inputs(vocab_size: int, max_length: int, token_types: bool, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Batches of several lengths with ragged rows (padding), for tracing and verifying."""
    generator = torch.Generator().manual_seed(seed)
    lengths = sorted({min(n, max_length) for n in (2, 9, 37, 128, max_length)})
    batches: list[dict[str, torch.Tensor]] = []
    for index, length in enumerate(lengths):
        rows = [length] if index == 0 else [length, max(1, length // 2), max(1, length // 3)]
        ids = torch.randint(0, vocab_size, (len(rows), length), generator=generator)
        mask = torch.zeros_like(ids)
        types = torch.zeros_like(ids)
        for r, n in enumerate(rows):
            mask[r, :n] = 1
            types[r, n // 2 : n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if token_types:
            batch["token_type_ids"] = types
        batches.append(batch)
    return batches


def verify(wrapper: ExportWrapper, onnx_path: Path, batches: list[dict[str, torch.Tensor]]) -> float:
    """The largest |ONNX Runtime - PyTorch| over every output of every sample batch."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = wrapper(*(batch[n] for n in names))
        got = session.run(None, {n: batch[n].numpy() for n in names})
        for want, have in zip(expected, got, strict=True):
            if tuple(want.shape) != have.shape:
                raise ExportError(f"ONNX output shape {have.shape} differs from PyTorch {tuple(want.shape)}")
            worst = max(worst, float(np.abs(want.numpy() - have).max()))
    return worst


def trace_export(wrapper: torch.nn.Module, example: tuple[Any, ...], onnx_path: Path, input_names: Sequence[str],
                 output_names: Sequence[str], axes: dict[str, dict[int, str]]) -> None:  # fmt: skip
    """``torch.onnx.export`` by tracing (``dynamo=False``: the TorchScript exporter), then ONNX's checker."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about constants it handles correctly
        torch.onnx.export(
            wrapper,
            example,
            str(onnx_path),
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(onnx_path))


def convert(source: Path, model_name: str, kind: str, out: Path, *, key: str = "") -> ModelMeta:
    """Export ``source`` for ``kind`` into ``out``: model.onnx, meta.json and the tokenizer."""
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(source))
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if not tokenizer.is_fast:
        raise ExportError(f"{model_name} has no fast tokenizer; split needs one for character offsets")
    model = load_model(source, kind)
    token_types = uses_token_types(model, tokenizer)
    input_names = ("input_ids", "attention_mask", "token_type_ids") if token_types else ("input_ids", "attention_mask")
    output_names = OUTPUT_NAMES[kind]
    # export() restores the wrapper's training flag on every submodule: it must be eval already.
    wrapper = ExportWrapper(model, kind, token_types).eval()
    positions, max_length = max_length_of(config, tokenizer)
    batches = sample_inputs(int(config.vocab_size), max_length, token_types)
    onnx_path = out / MODEL_FILE
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes.update({name: {0: "batch", 1: "sequence"} if kind == "qa" else {0: "batch"} for name in output_names})
    trace = batches[min(2, len(batches) - 1)]
    trace_export(wrapper, tuple(trace[n] for n in input_names), onnx_path, input_names, output_names, axes)
    max_diff = verify(wrapper, onnx_path, batches)
    if not max_diff <= VERIFY_ATOL:  # also catches NaN
        raise ExportError(
            f"ONNX output of {model_name} ({kind}) differs from PyTorch by up to {max_diff:.3e} "
            f"(allowed {VERIFY_ATOL:.0e})"
        )
    tokenizer.save_pretrained(str(out))
    if kind == "embed":
        _warn_about_pooling(source, model_name)
    meta = ModelMeta(
        task=kind,
        model=model_name,
        input_names=input_names,
        output_names=output_names,
        labels=_labels(config) if kind == "classify" else None,
        max_position_embeddings=positions,
        max_length=max_length,
        pad_token_id=_pad_id(tokenizer, config),
        max_diff=max_diff,
        key=key,
    )
    meta.save(out)
    return meta


def _labels(config: Any) -> tuple[str, ...]:
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return tuple(id2label.get(i, f"LABEL_{i}") for i in range(int(config.num_labels)))


def _pad_id(tokenizer: Any, config: Any) -> int:
    for candidate in (tokenizer.pad_token_id, getattr(config, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


def _warn_about_pooling(source: Path, model_name: str) -> None:
    """Sentence-transformers models may pool or project differently than the mean exported here."""
    pooling = source / "1_Pooling" / "config.json"
    if pooling.is_file() and not orjson.loads(pooling.read_bytes()).get("pooling_mode_mean_tokens", True):
        log.warning("%s is configured for a pooling other than mean; the export uses mean pooling", model_name)
    modules = source / "modules.json"
    if modules.is_file():
        extra = [m.get("type", "") for m in orjson.loads(modules.read_bytes())]
        extra = [t for t in extra if not t.endswith(("Transformer", "Pooling", "Normalize"))]
        if extra:
            log.warning("%s has modules the export leaves out: %s", model_name, ", ".join(extra))
