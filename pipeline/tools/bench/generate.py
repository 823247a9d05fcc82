"""The chat model's generation speed side by side: transformers, the ONNX engine alone and batched, variants.

``python -m pipeline.tools.bench.generate [--tokens 64] [--rounds 2]`` (or
:func:`bench` from Python) prints, on the same model and prompts (greedy,
end token ignored so every reply is ``tokens`` long):

* transformers ``generate`` (PyTorch, the export's source), one prompt at a time;
* the ONNX Runtime engine with one conversation at a time: tokens/s and time
  to first token (submit → first token, i.e. queueing + prefill);
* the same engine with 8 conversations submitted together (``rounds`` times):
  tokens/s in total and per conversation, time to first token, and the total
  over one conversation's (the issue's goal: ≥ 3×);
* each quantised variant against fp32: one conversation's tokens/s and its
  token agreement with fp32 (:mod:`pipeline.models.quantize`).

Nothing is asserted: speed goals are shown by ratios printed next to each other.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.settings import Settings

QUESTIONS: tuple[str, ...] = (
    "How do I reset my password?",
    "Where is my parcel? It should have arrived yesterday.",
    "Can I return shoes that don't fit?",
    "Do you ship to Canada, and how much does it cost?",
    "Which payment methods do you accept?",
    "How do I cancel my order?",
    "Can I change my delivery address after ordering?",
    "How long does a refund take?",
)


@dataclass
class Line:
    """One row of the report."""

    name: str
    conversations: int
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time: robust to other load on a shared machine
    ttft_ms: list[float] = field(default_factory=list)
    per_conversation: list[float] = field(default_factory=list)  # tokens/s of each reply
    note: str = ""

    @property
    def total_rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def render(self, baseline: float) -> str:
        ttft = ""
        if self.ttft_ms:
            ordered = sorted(self.ttft_ms)
            p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
            ttft = f"{statistics.median(ordered):7.0f} {p99:7.0f}"
        per = f"{statistics.mean(self.per_conversation):8.1f}" if self.per_conversation else " " * 8
        ratio = f"{self.total_rate / baseline:5.2f}×" if baseline else ""
        cpu = f"{self.cpu_seconds / self.tokens * 1000:8.1f}" if self.tokens else ""
        return (f"{self.name:<30} {self.conversations:>5} {per} {self.total_rate:8.1f} {ratio:>7} {cpu:>8} "
                f"{ttft:>15}  {self.note}")  # fmt: skip


def _engine_run(
    engine: Any, prompts: Sequence[Sequence[int]], tokens: int, together: bool
) -> tuple[Line, list[list[int]]]:
    """Run ``prompts`` on ``engine`` (one after another, or all submitted at once); time each."""
    line = Line("", len(prompts) if together else 1)
    replies: list[list[int]] = []
    began, cpu = time.perf_counter(), time.process_time()
    groups = [list(prompts)] if together else [[p] for p in prompts]
    for group in groups:
        submitted = time.perf_counter()
        firsts: dict[int, float] = {}
        lasts: dict[int, float] = {}

        def on_token(index: int, firsts: dict[int, float] = firsts, lasts: dict[int, float] = lasts) -> Any:
            def seen(_token: int) -> bool:
                now = time.perf_counter()
                firsts.setdefault(index, now)
                lasts[index] = now
                return True

            return seen

        futures = [engine.submit(p, tokens, on_token(i)) for i, p in enumerate(group)]
        for index, future in enumerate(futures):
            done = future.result(3600)
            replies.append(done.tokens)
            line.tokens += len(done.tokens)
            line.ttft_ms.append((firsts[index] - submitted) * 1000)
            if len(done.tokens) > 1:
                line.per_conversation.append((len(done.tokens) - 1) / max(lasts[index] - firsts[index], 1e-9))
    line.seconds, line.cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    return line, replies


def _transformers_run(exported: Any, prompts: Sequence[Sequence[int]], tokens: int) -> Line:
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.models.convert_decoder import from_pretrained_args
    from pipeline.models.export import resolve_model

    folder, extra = from_pretrained_args(resolve_model(exported.meta.model))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra).eval()  # its default attention
    line = Line("transformers generate (fp32)", 1)
    with torch.inference_mode():
        model.generate(torch.tensor([prompts[0]]), max_new_tokens=2, do_sample=False)  # warm up
        began, cpu = time.perf_counter(), time.process_time()
        for prompt in prompts:
            ids = torch.tensor([list(prompt)])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                 min_new_tokens=tokens, do_sample=False)  # fmt: skip
            line.tokens += int(out.shape[1] - ids.shape[1])
        line.seconds, line.cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    line.per_conversation = [line.total_rate]
    return line


def bench(settings: Settings, *, tokens: int = 64, rounds: int = 2, variants: Sequence[str] = ("int4", "int8"),
          transformers: bool = True, threads: int = 0) -> list[str]:  # fmt: skip
    """Measure and return the report's lines (also what ``python -m`` prints)."""
    from transformers import AutoTokenizer

    from pipeline.models.export import ensure_exported
    from pipeline.models.generation import OrtEngine
    from pipeline.models.generator import chat_ids
    from pipeline.models.quantize import agreement, variant_file

    exported = ensure_exported(settings.chat.chat_model, "decoder", settings)
    tokenizer = AutoTokenizer.from_pretrained(str(exported.path))
    prompts = [chat_ids(tokenizer, q) for q in QUESTIONS]
    lines: list[Line] = []
    if transformers:
        lines.append(_transformers_run(exported, prompts[:3], tokens))

    def engine_for(variant: str) -> Any:
        engine = OrtEngine(exported, model_file=variant_file(exported, variant).name, threads=threads,
                           max_sequences=len(prompts), max_tokens=settings.chat.generate_max_tokens)  # fmt: skip
        engine.eos = set()
        engine.submit(prompts[0], 2, lambda _t: True).result(600)  # warm up
        return engine

    engine = engine_for("fp32")
    try:
        one, fp32_replies = _engine_run(engine, prompts, tokens, together=False)
        one.name = "ONNX engine fp32"
        lines.append(one)
        many = Line("ONNX engine fp32, batched", len(prompts))
        for _ in range(rounds):
            run, _replies = _engine_run(engine, prompts, tokens, together=True)
            many.tokens, many.seconds = many.tokens + run.tokens, many.seconds + run.seconds
            many.cpu_seconds += run.cpu_seconds
            many.ttft_ms += run.ttft_ms
            many.per_conversation += run.per_conversation
        many.note = f"{many.total_rate / max(one.total_rate, 1e-9):.2f}× one conversation's total"
        lines.append(many)
    finally:
        engine.close()
    check = prompts[:4]
    for variant in variants:
        engine = engine_for(variant)
        try:
            line, replies = _engine_run(engine, check, tokens, together=False)
        finally:
            engine.close()
        prefix, same, identical = agreement(fp32_replies[: len(check)], replies)
        size = variant_file(exported, variant).stat().st_size / 1e6
        line.name = f"ONNX engine {variant}"
        line.note = (f"agreement with fp32: {identical}/{len(check)} replies identical, {prefix:.3f} of tokens "
                     f"before the first difference, {same:.3f} of positions; {size:.0f} MB")  # fmt: skip
        lines.append(line)
    baseline = one.total_rate
    model = exported.meta.model.rsplit("/", 1)[-1]
    header = (f"{'path':<30} {'conv.':>5} {'tok/s/c':>8} {'tok/s':>8} {'vs 1':>7} {'CPU ms/t':>8} {'TTFT p50':>7} "
              f"{'p99':>7}  (ms; {tokens} new tokens a reply, {len(prompts)} prompts, {model})")  # fmt: skip
    return [header, *(line.render(baseline) for line in lines)]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the side-by-side report."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per reply")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the batched run")
    parser.add_argument("--variants", default="int4,int8", help="quantised variants to compare ('' for none)")
    parser.add_argument("--no-transformers", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: one per core)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    variants = [v for v in args.variants.split(",") if v]
    for line in bench(Settings.from_env(), tokens=args.tokens, rounds=args.rounds, variants=variants,
                      transformers=not args.no_transformers, threads=args.threads):  # fmt: skip
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
