"""Greedy generation on ONNX Runtime with a KV cache and continuous batching: the default chat engine.

API (the :class:`~pipeline.models.generator.Generator` seam the generate stage uses; loading
from Settings and a plain iterator of replies in :mod:`pipeline.models.chat_engine`)::

    engine, tokenizer = load_engine(settings)            # exports the decoder on first use
    future = engine.submit(prompt_ids, max_new_tokens, on_token, deadline_ms=None, process=None)
    #   on_token(token_id) -> bool runs on the engine's thread for each new token;
    #   False stops the sequence. Stream text with TextStream(tokenizer).push(token).
    #   process(tokens, logits_row) -> logits_row (optional) changes the sequence's own
    #   logits before each greedy pick: grounded decoding (pipeline.models.constraints).
    generated = future.result()                           # Generated(tokens, stopped, prompt_tokens)
    engine.close()

``stopped`` is ``"eos"`` (the model ended it; the end token is not in
``tokens``), ``"length"`` (``max_new_tokens``, or the model's positions) or
``"stopped"`` (``on_token`` returned False, ``deadline_ms`` (epoch ms) passed,
or the engine closed): a reply cut short.

How it runs: one thread owns the batch. A submitted sequence waits until it
fits (at most ``max_sequences`` rows, and the rows' prompt + ``max_new_tokens``
summed within ``max_tokens``: the token budget, which bounds the cache's
memory), then joins at the next step: the sequences joining together (their
prompts within ``max_prefill_tokens``, so that a crowd arriving at once is
prefilled a few at a time between decode steps, and the first of them streams
after its own prefill rather than everyone's) are prefilled in one call
(left-padded among themselves), which gives their first token, and their
caches are merged into the running batch. Every step then feeds each row its
last token. The batch's caches are one left-padded tensor
per layer kept as ONNX Runtime values from one step to the next, so a step
copies nothing on the Python side; the caches are only rebuilt when the
batch's rows change (a join, or a finished sequence dropped and the padding
columns no row needs any more cut off). Padding is masked and each row has
its own positions, so a sequence's greedy tokens do not depend on the company
it keeps (``tests/unit/test_generation.py`` checks them against transformers).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pipeline.errors import ConfigError, TooLargeError
from pipeline.messages.deadline import now_ms, passed
from pipeline.models.export import MODEL_FILE, DecoderShape, ExportedModel, ModelMeta
from pipeline.models.generator import Generated, OnToken, Process
from pipeline.models.session import check_loaded

log = logging.getLogger("pipeline.generation")

# How long the idle loop sleeps between looks at its deadlines and the closed flag.
_IDLE_WAIT_S = 0.05


@dataclass
class _Sequence:
    id: int
    prompt: list[int]
    max_new: int
    on_token: OnToken
    deadline_ms: int | None
    process: Process | None = None
    future: Future[Generated] = field(default_factory=Future)
    tokens: list[int] = field(default_factory=list)

    @property
    def reserve(self) -> int:
        """Cache positions it may come to hold: what the token budget counts."""
        return len(self.prompt) + self.max_new


class _Batch:
    """The running rows: per-layer caches, left-padded to one length, and their attention mask."""

    def __init__(self) -> None:
        self.rows: list[_Sequence] = []
        self.past: list[Any] = []  # per layer key, value: OrtValue (after a step) or ndarray (after a rebuild)
        self.mask = np.zeros((0, 0), np.int64)  # 1 where a row has a cached token

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])


def _array(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, ort.OrtValue) else value


class OrtEngine:
    """The continuous-batching loop over an exported decoder (see the module docstring)."""

    def __init__(
        self,
        exported: ExportedModel | Path,
        *,
        model_file: str = MODEL_FILE,
        threads: int = 0,
        max_sequences: int = 8,
        max_tokens: int = 16_384,
        max_prefill_tokens: int = 512,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
    ) -> None:
        path = exported.path if isinstance(exported, ExportedModel) else Path(exported)
        meta = exported.meta if isinstance(exported, ExportedModel) else ModelMeta.load(path)
        if meta.decoder is None:
            raise ConfigError(f"{path} is a {meta.task} export, not a decoder")
        self.shape: DecoderShape = meta.decoder
        self.max_positions = meta.max_position_embeddings
        self.eos: set[int] = set(self.shape.eos_token_ids)
        self.max_sequences, self.max_tokens = max(1, max_sequences), max(1, max_tokens)
        self.max_prefill_tokens = max(1, max_prefill_tokens)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path / model_file), options, providers=list(providers))
        self.provider = check_loaded(self.session, providers, str(path / model_file))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ids = count()
        self.waiting: list[_Sequence] = []
        self.batch = _Batch()
        self.lock = threading.Condition()
        self.closed = False
        self.steps = 0  # decode steps run (for tests and benchmarks)
        self.thread = threading.Thread(target=self._loop, name="ort-engine", daemon=True)
        self.thread.start()

    # -- the API ------------------------------------------------------------------

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        on_token: OnToken,
        deadline_ms: int | None = None,
        process: Process | None = None,
    ) -> Future[Generated]:
        """Start a sequence; it joins the running batch at the next step that has room. Thread-safe."""
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("an empty prompt: nothing to continue")
        room = self.max_positions - len(prompt)
        if room <= 0:
            raise TooLargeError(f"a prompt of {len(prompt)} tokens fills the model's {self.max_positions} positions")
        sequence = _Sequence(next(self.ids), prompt, max(0, min(max_new_tokens, room)), on_token, deadline_ms, process)
        with self.lock:
            if self.closed:
                raise RuntimeError("the generation engine is closed")
            self.waiting.append(sequence)
            self.lock.notify()
        return sequence.future

    def close(self) -> None:
        """Stop the loop; sequences still waiting or running end ``stopped``."""
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(30)

    @property
    def running(self) -> int:
        return len(self.batch.rows)

    # -- the loop -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.batch.rows and not self.closed:
                    self.lock.wait(_IDLE_WAIT_S)
                if self.closed:
                    for sequence in [*self.waiting, *self.batch.rows]:
                        self._finish(sequence, "stopped")
                    return
                joining = self._admit()
            try:
                self._expire()
                if joining:
                    self._join([s for s in joining if not s.future.done()])
                if self.batch.rows:
                    self._step()
            except Exception as exc:  # the model failed: every running sequence fails with it
                log.exception("generation step failed")
                for sequence in [*joining, *self.batch.rows]:
                    if not sequence.future.done():
                        sequence.future.set_exception(exc)
                self.batch = _Batch()

    def _admit(self) -> list[_Sequence]:
        """Waiting sequences that fit, first come first in (called with the lock held)."""
        now = now_ms()
        for sequence in [s for s in self.waiting if passed(s.deadline_ms, now)]:
            self.waiting.remove(sequence)
            self._finish(sequence, "stopped")
        for sequence in [s for s in self.waiting if s.max_new == 0]:
            self.waiting.remove(sequence)
            self._finish(sequence, "length")
        rows = len(self.batch.rows)
        budget = self.max_tokens - sum(s.reserve for s in self.batch.rows)
        prefill = self.max_prefill_tokens
        joining: list[_Sequence] = []
        while self.waiting and rows + len(joining) < self.max_sequences:
            sequence = self.waiting[0]
            alone = rows == 0 and not joining  # a sequence over the whole budget runs alone
            if sequence.reserve > budget and not alone:
                break
            if joining and len(sequence.prompt) > prefill:
                break  # joins after the next decode step
            joining.append(self.waiting.pop(0))
            budget -= sequence.reserve
            prefill -= len(sequence.prompt)
        return joining

    def _expire(self) -> None:
        now = now_ms()
        ended = [s for s in self.batch.rows if passed(s.deadline_ms, now)]
        for sequence in ended:
            self._finish(sequence, "stopped")
        if ended:
            self._drop_finished()

    def _run(self, feeds: dict[str, Any]) -> tuple[np.ndarray, list[ort.OrtValue]]:
        values = {
            name: v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(v) for name, v in feeds.items()
        }
        out = self.session.run_with_ort_values(self.outputs, values)
        return out[0].numpy(), list(out[1:])

    def _join(self, joining: list[_Sequence]) -> None:
        """Prefill ``joining`` in one call, emit their first tokens, merge their caches into the batch."""
        if not joining:
            return
        longest = max(len(s.prompt) for s in joining)
        ids = np.zeros((len(joining), longest), np.int64)
        mask = np.zeros((len(joining), longest), np.int64)
        positions = np.zeros((len(joining), longest), np.int64)
        for row, sequence in enumerate(joining):
            n = len(sequence.prompt)
            ids[row, longest - n :] = sequence.prompt
            mask[row, longest - n :] = 1
            positions[row, longest - n :] = np.arange(n)
        empty = np.zeros((len(joining), self.shape.kv_heads, 0, self.shape.head_dim), np.float32)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        feeds.update({name: empty for name in self.inputs[3:]})
        logits, present = self._run(feeds)
        self._merge(joining, [p.numpy() for p in present], mask)
        for sequence, token in zip(joining, _pick(joining, logits), strict=True):
            self._emit(sequence, token)
        self._drop_finished()

    def _merge(self, joining: list[_Sequence], present: list[np.ndarray], mask: np.ndarray) -> None:
        """The batch with ``joining``'s rows appended, every cache right-aligned to the longer length."""
        old = self.batch
        if not old.rows:
            self.batch.rows, self.batch.past, self.batch.mask = list(joining), present, mask
            return
        length = max(old.length, mask.shape[1])
        rows = len(old.rows) + len(joining)
        merged = np.zeros((rows, length), np.int64)
        merged[: len(old.rows), length - old.length :] = old.mask
        merged[len(old.rows) :, length - mask.shape[1] :] = mask
        past: list[np.ndarray] = []
        for before, new in zip(old.past, present, strict=True):
            before = _array(before)
            both = np.zeros((rows, self.shape.kv_heads, length, self.shape.head_dim), np.float32)
            both[: len(old.rows), :, length - old.length :] = before
            both[len(old.rows) :, :, length - new.shape[2] :] = new
            past.append(both)
        self.batch.rows, self.batch.past, self.batch.mask = [*old.rows, *joining], past, merged

    def _step(self) -> None:
        """Advance every running row by one token."""
        batch = self.batch
        rows = len(batch.rows)
        mask = np.concatenate([batch.mask, np.ones((rows, 1), np.int64)], axis=1)
        feeds: dict[str, Any] = {
            "input_ids": np.array([[s.tokens[-1]] for s in batch.rows], np.int64),
            "attention_mask": mask,
            "position_ids": np.array([[len(s.prompt) + len(s.tokens) - 1] for s in batch.rows], np.int64),
        }
        feeds.update(zip(self.inputs[3:], batch.past, strict=True))
        logits, present = self._run(feeds)
        batch.past, batch.mask = present, mask
        self.steps += 1
        for sequence, token in zip(list(batch.rows), _pick(batch.rows, logits), strict=True):
            self._emit(sequence, token)
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Remove finished rows and the padding columns no remaining row needs."""
        batch = self.batch
        keep = [i for i, s in enumerate(batch.rows) if not s.future.done()]
        if len(keep) == len(batch.rows):
            return
        if not keep:
            self.batch = _Batch()
            return
        mask = batch.mask[keep]
        start = int(np.argmax(mask.any(axis=0)))  # first column some row still attends to
        batch.past = [np.ascontiguousarray(_array(p)[keep][:, :, start:]) for p in batch.past]
        batch.mask = np.ascontiguousarray(mask[:, start:])
        batch.rows = [batch.rows[i] for i in keep]

    def _emit(self, sequence: _Sequence, token: int) -> None:
        """Give ``token`` to its sequence; finish the sequence if it is done (it leaves at the next drop)."""
        if token in self.eos:
            self._finish(sequence, "eos")
            return
        sequence.tokens.append(token)
        try:
            go_on = sequence.on_token(token)
        except Exception as exc:  # the caller's callback failed: that sequence fails, the others run on
            log.exception("on_token of sequence %d failed", sequence.id)
            sequence.future.set_exception(exc)
            return
        if not go_on or passed(sequence.deadline_ms):
            self._finish(sequence, "stopped")
        elif len(sequence.tokens) >= sequence.max_new:
            self._finish(sequence, "length")

    @staticmethod
    def _finish(sequence: _Sequence, stopped: str) -> None:
        if not sequence.future.done():
            sequence.future.set_result(Generated(list(sequence.tokens), stopped, len(sequence.prompt)))


def _pick(rows: Sequence[_Sequence], logits: np.ndarray) -> list[int]:
    """Each row's greedy token, after its own logits processor (if it has one)."""
    for row, sequence in enumerate(rows):
        if sequence.process is not None:
            logits[row] = sequence.process(sequence.tokens, logits[row])
    return [int(t) for t in logits.argmax(axis=-1).tolist()]
