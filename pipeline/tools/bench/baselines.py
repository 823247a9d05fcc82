"""The in-process rows of the bench: raw ONNX Runtime (the limit) and transformers eager.

Both run the project's own embed model on the bench's texts, tokenized
beforehand (tokenizing is split's work in the pipeline, and costs the same
there), so the rows time the model alone. Raw ONNX Runtime is swept over batch
sizes; its best is the limit the pipeline is held against.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.session import feeds, ort_session
from pipeline.tools.bench.stats import percentile

WORDS = (  # noqa: SIM905 - a sentence of words reads better than a list of 70 strings
    "order parcel refund account password delivery invoice payment address store warranty return shipping "
    "discount card customer service product size colour price week today tomorrow cancel change update help "
    "please where when how why can could would should my your the a an to for with from about it is was "
    "arrived late broken missing wrong charge twice email phone login reset track number"
).split()

Say = Callable[[str], None]


def texts(count: int, words: int = 12, seed: int = 7) -> list[str]:
    """``count`` distinct texts of ``words`` words each, the same for every row and every run."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + f" #{i}" for i in range(count)]


@dataclass
class Sweep:
    """Texts per second at each batch size; the best is the limit."""

    name: str
    per_batch: dict[int, float] = field(default_factory=dict)
    # One text alone, milliseconds: the model's share of a request at light load.
    single_ms_p50: float = float("nan")

    @property
    def best_batch(self) -> int:
        return max(self.per_batch, key=lambda b: self.per_batch[b])

    @property
    def best(self) -> float:
        return self.per_batch[self.best_batch] if self.per_batch else float("nan")


def timed(run: Callable[[Any], Any], batches: Sequence[Any], seconds: float) -> tuple[int, float, list[float]]:
    """Run over ``batches`` (cycling) for ``seconds`` (and 3 calls at least); (rows done, elapsed, per-call seconds)."""
    run(batches[0])  # warm-up: first-run allocations and kernel choices
    done, calls, began = 0, [], time.perf_counter()
    index = 0
    while True:
        batch = batches[index % len(batches)]
        start = time.perf_counter()
        rows = run(batch)
        calls.append(time.perf_counter() - start)
        done += rows
        index += 1
        elapsed = time.perf_counter() - began
        if elapsed >= seconds and index >= 3:
            return done, elapsed, calls


def raw_ort(name: str, onnx_path: Path, tokenizer: Any, corpus: Sequence[str], batch_sizes: Sequence[int],
            threads: int, seconds: float, say: Say) -> Sweep:  # fmt: skip
    """ONNX Runtime alone on pre-tokenized batches of ``corpus``, swept over ``batch_sizes``."""
    session = ort_session(onnx_path, threads)
    names = [i.name for i in session.get_inputs()]
    output = session.get_outputs()[0].name
    sweep = Sweep(name)
    for size in batch_sizes:
        # At most 64 distinct batches: enough variety in lengths, little time spent tokenizing.
        starts = range(0, min(len(corpus) - size + 1, 64 * size), size)
        prepared = [feeds(tokenizer, corpus[i : i + size], names) for i in starts]
        if not prepared:
            continue

        def run(feed: dict[str, np.ndarray]) -> int:
            session.run([output], feed)
            return int(feed["input_ids"].shape[0])

        done, elapsed, calls = timed(run, prepared, seconds)
        sweep.per_batch[size] = done / elapsed
        if size == 1:
            sweep.single_ms_p50 = percentile(calls, 0.5) * 1000
        say(f"  {name}: batch {size:>3}: {sweep.per_batch[size]:7.1f} texts/s")
    return sweep


def transformers_eager(model_dir: str, tokenizer: Any, corpus: Sequence[str], batch_sizes: Sequence[int],
                       threads: int, seconds: float, say: Say) -> Sweep:  # fmt: skip
    """The same model in PyTorch eager mode (mean pooling over the attention mask), as most services run it."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(model_dir).eval()
    sweep = Sweep("transformers eager")
    for size in batch_sizes:
        # The same tokenizer as the other rows (numpy out), handed to PyTorch as tensors.
        prepared = [
            {
                name: torch.from_numpy(np.asarray(values, dtype=np.int64))
                for name, values in tokenizer(
                    list(corpus[i : i + size]), padding=True, truncation=True, return_tensors="np"
                ).items()
                if name in ("input_ids", "attention_mask", "token_type_ids")
            }
            for i in range(0, min(len(corpus) - size + 1, 64 * size), size)
        ]

        def run(batch: Any) -> int:
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return int(batch["input_ids"].shape[0])

        done, elapsed, calls = timed(run, prepared, seconds)
        sweep.per_batch[size] = done / elapsed
        if size == 1:
            sweep.single_ms_p50 = percentile(calls, 0.5) * 1000
        say(f"  transformers eager: batch {size:>3}: {sweep.per_batch[size]:7.1f} texts/s")
    return sweep
