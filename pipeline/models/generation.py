"""Greedy generation on ONNX Runtime with a KV cache, continuously batched: the default chat engine.

**Export** (:func:`ensure_decoder`): the reply model (a Llama-architecture
folder, or a GGUF file that transformers dequantises) becomes one ONNX graph
taking ``input_ids``, ``attention_mask``, ``position_ids`` and the past keys
and values of every layer stacked (``past_k``, ``past_v``: layers × batch ×
kv heads × past length × head dim) and returning the logits and the present
keys and values. The same graph prefills a prompt (past length 0) and takes
one step per token. It is cached under ``Settings.model_cache_dir`` by a hash
of the model's bytes.

**Engine** (:class:`OrtEngine`): one thread. A submitted sequence is
prefilled alone at the next step, then joins the running batch: each step
left-pads the sequences' caches to the longest, masks the padding, gives
each its own position, and advances every sequence by one token. Greedy
tokens do not depend on the company a sequence keeps (padding is masked).

This is the minimal engine the chat flow needs; the ``llm`` branch's engine
(quantised variants, oracle tests on the real model) replaces it when merged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipeline.errors import ExportError
from pipeline.models.generator import Generated, OnToken
from pipeline.settings import Settings

log = logging.getLogger("pipeline.generation")

EXPORT_VERSION = "decoder-1"


def _from(path: str) -> tuple[str, dict[str, str]]:
    """from_pretrained's arguments for a model folder or a GGUF file."""
    if path.endswith(".gguf"):
        folder, _, name = path.rpartition("/")
        return folder, {"gguf_file": name}
    return path, {}


def _content_hash(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256(EXPORT_VERSION.encode())
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def ensure_decoder(model: str, cache_dir: Path) -> Path:
    """The exported decoder folder for ``model`` (exported now unless cached)."""
    source = Path(model)
    out = cache_dir / f"chat-{source.stem[-40:]}-{_content_hash(source)}"
    if (out / "meta.json").exists():
        return out
    began = time.monotonic()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # In a child process: tracing leaves torch's global state behind, and a
    # serving process should only run ONNX Runtime (as pipeline.models.export).
    done = subprocess.run([sys.executable, "-m", "pipeline.models.generation", model, str(tmp)], check=False)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"exporting the chat model {model} failed (exit {done.returncode}); see the log above")
    try:
        tmp.rename(out)
    except OSError:  # another process exported it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to %s in %.1f s", model, out, time.monotonic() - began)
    return out


def _export(model: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    folder, extra = _from(model)
    hf = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, **extra).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    config = hf.config
    layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, past_k: Any, past_v: Any) -> Any:
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past_k[i], past_v[i], i)
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                past_key_values=cache, use_cache=True)  # fmt: skip
            present = output.past_key_values.layers
            keys = torch.stack([present[i].keys for i in range(layers)])
            values = torch.stack([present[i].values for i in range(layers)])
            return output.logits[:, -1, :], keys, values

    batch, past, new = 2, 3, 4
    example = (
        torch.ones(batch, new, dtype=torch.long),
        torch.ones(batch, past + new, dtype=torch.long),
        torch.arange(past, past + new).repeat(batch, 1),
        torch.zeros(layers, batch, kv_heads, past, head_dim),
        torch.zeros(layers, batch, kv_heads, past, head_dim),
    )
    axes = {
        "input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "new"}, "past_k": {1: "batch", 3: "past"}, "past_v": {1: "batch", 3: "past"},
        "logits": {0: "batch"}, "present_k": {1: "batch", 3: "total"}, "present_v": {1: "batch", 3: "total"},
    }  # fmt: skip
    with torch.inference_mode():
        torch.onnx.export(
            Step(), example, str(out / "decoder.onnx"), dynamo=False, opset_version=17, dynamic_axes=axes,
            input_names=["input_ids", "attention_mask", "position_ids", "past_k", "past_v"],
            output_names=["logits", "present_k", "present_v"],
        )  # fmt: skip
    tokenizer.save_pretrained(str(out))
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    eos = sorted({int(e) for e in [*eos, tokenizer.eos_token_id] if e is not None})
    meta = {"model": model, "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim, "eos": eos}
    (out / "meta.json").write_bytes(orjson.dumps(meta))


@dataclass
class _Sequence:
    prompt: list[int]
    max_new: int
    on_token: OnToken
    future: Future[Generated] = field(default_factory=Future)
    tokens: list[int] = field(default_factory=list)
    keys: Any = None  # (layers, 1, kv heads, length, head dim)
    values: Any = None


class OrtEngine:
    """The continuous-batching loop over the exported decoder (see the module docstring)."""

    def __init__(self, folder: Path, threads: int = 0, decoder: str = "decoder.onnx") -> None:
        import onnxruntime as ort

        meta = orjson.loads((folder / "meta.json").read_bytes())
        self.layers, self.kv_heads, self.head_dim = meta["layers"], meta["kv_heads"], meta["head_dim"]
        self.eos = set(meta["eos"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        self.session = ort.InferenceSession(str(folder / decoder), options, providers=["CPUExecutionProvider"])
        self.incoming: list[_Sequence] = []
        self.active: list[_Sequence] = []
        self.lock = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="ort-engine", daemon=True)
        self.thread.start()

    def submit(self, prompt_ids: Sequence[int], max_new_tokens: int, on_token: OnToken) -> Future[Generated]:
        sequence = _Sequence(list(prompt_ids), max_new_tokens, on_token)
        with self.lock:
            self.incoming.append(sequence)
            self.lock.notify()
        return sequence.future

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(10)

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.incoming and not self.active and not self.closed:
                    self.lock.wait(0.1)
                if self.closed:
                    for sequence in [*self.incoming, *self.active]:
                        sequence.future.set_result(Generated(sequence.tokens, "stopped", len(sequence.prompt)))
                    return
                joining, self.incoming = self.incoming, []
            try:
                for sequence in joining:
                    self._emit(sequence, self._prefill(sequence))
                if self.active:
                    for sequence, token in zip(list(self.active), self._step(), strict=True):
                        self._emit(sequence, token)
            except Exception as exc:  # the model failed: every running sequence fails with it
                log.exception("generation step failed")
                for sequence in [*joining, *self.active]:
                    if not sequence.future.done():
                        sequence.future.set_exception(exc)
                self.active = []

    def _run(self, ids: Any, mask: Any, positions: Any, keys: Any, values: Any) -> tuple[Any, Any, Any]:
        logits, keys, values = self.session.run(
            None,
            {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "past_k": keys, "past_v": values},
        )
        return logits, keys, values

    def _prefill(self, sequence: _Sequence) -> int:
        n = len(sequence.prompt)
        empty = np.zeros((self.layers, 1, self.kv_heads, 0, self.head_dim), np.float32)
        logits, sequence.keys, sequence.values = self._run(
            np.array([sequence.prompt], np.int64), np.ones((1, n), np.int64), np.arange(n, dtype=np.int64)[None],
            empty, empty,
        )  # fmt: skip
        self.active.append(sequence)
        return int(logits[0].argmax())

    def _step(self) -> list[int]:
        batch = self.active
        longest = max(s.keys.shape[3] for s in batch)
        shape = (self.layers, len(batch), self.kv_heads, longest, self.head_dim)
        keys, values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        mask = np.zeros((len(batch), longest + 1), np.int64)
        positions = np.zeros((len(batch), 1), np.int64)
        ids = np.zeros((len(batch), 1), np.int64)
        for i, s in enumerate(batch):
            length = s.keys.shape[3]
            keys[:, i, :, longest - length :] = s.keys[:, 0]
            values[:, i, :, longest - length :] = s.values[:, 0]
            mask[i, longest - length :] = 1
            positions[i, 0] = length
            ids[i, 0] = s.tokens[-1]
        logits, present_k, present_v = self._run(ids, mask, positions, keys, values)
        for i, s in enumerate(batch):
            length = s.keys.shape[3]
            s.keys = present_k[:, i : i + 1, :, longest - length :]
            s.values = present_v[:, i : i + 1, :, longest - length :]
        return [int(row.argmax()) for row in logits]

    def _emit(self, sequence: _Sequence, token: int) -> None:
        """Give ``token`` to its sequence; end the sequence if it is done."""
        stopped = None
        if token in self.eos:
            stopped = "eos"
        else:
            sequence.tokens.append(token)
            if not sequence.on_token(token):
                stopped = "stopped"
            elif len(sequence.tokens) >= sequence.max_new:
                stopped = "length"
        if stopped is not None:
            if sequence in self.active:
                self.active.remove(sequence)
            sequence.keys = sequence.values = None
            sequence.future.set_result(Generated(sequence.tokens, stopped, len(sequence.prompt)))


def load_engine(settings: Settings) -> tuple[OrtEngine, Any]:
    """The ONNX Runtime engine for ``settings.chat_model`` (exported on first use) and its tokenizer."""
    from transformers import AutoTokenizer

    folder = ensure_decoder(settings.chat_model, Path(settings.model_cache_dir))
    decoder = "decoder.onnx"
    if settings.chat_quantized:
        from pipeline.models.quantize import ensure_int8

        decoder = ensure_int8(folder).name
    return OrtEngine(folder, decoder=decoder), AutoTokenizer.from_pretrained(str(folder))


if __name__ == "__main__":  # the export child: python -m pipeline.models.generation MODEL OUT_DIR
    _export(sys.argv[1], Path(sys.argv[2]))
