"""``pipeline chat-bench``: chat replies through Kafka next to the same engine in-process.

Starts the pipeline (like ``pipeline demo``, under its own topic prefix, with
the answer cache off), then for each concurrency level runs that many
conversations at once, each sending ``--rounds`` messages one after the other,
and measures on the client: time to first token (send → first streamed
piece), tokens/s per conversation (after the first token) and in total. Then it
stops the pipeline and runs the same prompts (the same retrieved entries,
the same chat template) through the same engine in this process. Ratios are
printed side by side; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tools.bench.generate import QUESTIONS  # the same customer questions as the engine's bench


@dataclass
class Run:
    """The measurements of one reply."""

    first_token_ms: float
    tokens: int
    decode_s: float  # first token → last token
    retrieval_ms: float = 0.0
    prefill_ms: float = 0.0  # generate's start → first token (the engine: waiting for room, prefill)
    rate: float | None = None  # the model's tokens/s as generate measured it (its first token → last)

    @property
    def overhead_ms(self) -> float:
        """What the Kafka path adds to retrieval and prefill: the hand-off to generate, the first chunk's trip."""
        return self.first_token_ms - self.retrieval_ms - self.prefill_ms


@dataclass
class Level:
    concurrency: int
    runs: list[Run] = field(default_factory=list)
    wall_s: float = 0.0

    def ttft(self, q: float) -> float:
        values = sorted(r.first_token_ms for r in self.runs)
        return values[min(len(values) - 1, int(q * len(values)))]

    def overhead(self) -> float:
        return statistics.median(r.overhead_ms for r in self.runs)

    def per_conversation(self) -> float:
        timed = [r for r in self.runs if r.decode_s > 0 and r.tokens > 1]
        rates = [r.rate if r.rate else (r.tokens - 1) / r.decode_s for r in timed]
        return statistics.median(rates) if rates else 0.0

    def total(self) -> float:
        return sum(r.tokens for r in self.runs) / self.wall_s


def register(sub: Any) -> None:
    bench = sub.add_parser("chat-bench", help="chat: time to first token and tokens/s through Kafka vs in-process")
    bench.add_argument("--concurrency", default="1,8", help="conversations at once, comma-separated (default 1,8)")
    bench.add_argument("--rounds", type=int, default=3, help="messages per conversation (default 3)")
    bench.add_argument("--tokens", type=int, default=64, help="new tokens per reply (default 64)")
    add_cluster_args(bench)
    bench.set_defaults(func=cmd_chat_bench)


def cmd_chat_bench(args: argparse.Namespace) -> int:
    levels = [int(c) for c in args.concurrency.split(",")]
    settings = settings_from(args, prefix=f"bench{uuid.uuid4().hex[:6]}-", answer_cache_max_bytes=0,
                             chat_default_tokens=args.tokens, chat_max_tokens=max(args.tokens, 1))  # fmt: skip
    print(f"chat bench: model {settings.chat.chat_model}, {args.tokens} tokens per reply, {args.rounds} rounds")
    kafka, entries = through_kafka(settings, levels, args.rounds)
    local = in_process(settings, levels, args.rounds, entries, grounded=False)
    grounded = in_process(settings, levels, args.rounds, entries, grounded=True) if settings.chat.chat_grounded else {}
    speeds = decoding_ab(settings, entries) if settings.chat.chat_grounded else []
    print()
    print(f"{'conversations':>13} | {'':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'tok/s/conv':>10} {'tok/s total':>11}"
          f" | {'retrieval p50':>13} {'+ prefill p50':>13} {'+ Kafka p50':>11}")  # fmt: skip
    for n in levels:
        rows = [("kafka", kafka[n]), ("in-process", local[n])] + ([("grounded", grounded[n])] if grounded else [])
        for name, level in rows:
            parts = ""
            if name == "kafka":  # TTFT = retrieval + prefill + what Kafka adds (the goal: <= 30 ms)
                retrieval = statistics.median(r.retrieval_ms for r in level.runs)
                prefill = statistics.median(r.prefill_ms for r in level.runs)
                parts = f"{retrieval:>10.0f} ms {prefill:>10.0f} ms {level.overhead():>8.0f} ms"
            print(f"{n:>13} | {name:>9} {level.ttft(0.5):>7.0f}ms {level.ttft(0.99):>7.0f}ms "
                  f"{level.per_conversation():>10.1f} {level.total():>11.1f} | {parts}")  # fmt: skip
        ratio = kafka[n].total() / local[n].total()
        extra = kafka[n].ttft(0.5) - local[n].ttft(0.5)
        print(f"{'':>13} | kafka/in-process tokens/s {ratio:.2f}; TTFT p50 +{extra:.0f} ms through Kafka")
    if speeds:
        ratios = ", ".join(f"{g / p:.2f}" for p, g in speeds)
        print(f"decoding A/B, the same grounded prompts with and without the logits processors, alternated, "
              f"40 tokens each: plain {statistics.mean(p for p, _ in speeds):.1f} tokens/s, grounded "
              f"{statistics.mean(g for _, g in speeds):.1f}; grounded/plain per round {ratios}")  # fmt: skip
    return 0


def through_kafka(settings: Settings, levels: list[int], rounds: int) -> tuple[dict[int, Level], dict[str, Any]]:
    from pipeline.client import Client
    from pipeline.flow import STAGE_NAMES
    from pipeline.local.cluster import prepare, wait_ready
    from pipeline.local.supervisor import Supervisor
    from pipeline.messages import Answer

    counts = dict.fromkeys(STAGE_NAMES, 1)
    prepare(settings)
    supervisor = Supervisor(counts, settings, PROJECT_ROOT / ".cache" / "logs" / "chat-bench")
    supervisor.start()
    results: dict[int, Level] = {}
    entries: dict[str, Any] = {}
    try:
        if not wait_ready(
            settings, counts, threading.Event(), timeout_s=600, on_wait=supervisor.check, turning=supervisor.turning
        ):
            raise SystemExit(f"the pipeline did not come up; see {supervisor.log_dir}")
        with Client(settings) as client:
            list(client.stream({"task": "chat", "text": "Hello!"}, timeout_s=120))  # warm up every stage

            def one(text: str, level: Level, lock: threading.Lock) -> None:
                sent = time.perf_counter()
                first = last = 0.0
                answer: Answer | None = None
                for item in client.stream({"task": "chat", "text": text}, timeout_s=300):
                    if isinstance(item, Answer):
                        answer = item
                    else:
                        last = time.perf_counter()
                        first = first or last
                if answer is None or answer.result is None or not first:
                    raise SystemExit(f"no streamed reply: {answer}")
                hops = answer.latency_ms
                retrieval = sum(ms for hop, ms in hops.items() if hop in ("filter", "split", "infer", "merge"))
                with lock:
                    entries[text] = answer.result["entries"]
                    level.runs.append(Run((first - sent) * 1000, answer.result["tokens"]["completion"], last - first,
                                          retrieval, answer.result.get("prefill_ms") or 0.0,
                                          answer.result.get("tokens_per_s")))  # fmt: skip

            for n in levels:
                results[n] = _level(n, rounds, one)
                print(f"  kafka, {n} conversations: {len(results[n].runs)} replies in {results[n].wall_s:.1f} s")
    finally:
        supervisor.stop()
    return results, entries


def in_process(
    settings: Settings, levels: list[int], rounds: int, entries: dict[str, Any], grounded: bool
) -> dict[int, Level]:
    """The same prompts through the same engine here: the model's text as it comes, or grounded as generate runs it."""
    from pipeline.messages import Prompt
    from pipeline.models.constraints import Vocabulary
    from pipeline.models.generator import TextStream, load_generator
    from pipeline.stages.generate.grounding import CheckedStream
    from pipeline.stages.generate.prompting import chat_messages, grounded_plan, grounded_sequence, prompt_ids

    engine, tokenizer = load_generator(settings)
    vocab = Vocabulary(tokenizer) if grounded else None
    try:
        engine.submit(prompt_ids(tokenizer, chat_messages(Prompt("w", "Hello!"), [])), 4, lambda _: True).result()

        def one(text: str, level: Level, lock: threading.Lock) -> None:
            prompt = Prompt("b", text, entries=entries.get(text, []))
            times: list[float] = []
            process, go_on = None, lambda _token: True
            if vocab is not None:
                plan = grounded_plan(prompt, [])
                ids, process = grounded_sequence(plan, tokenizer, vocab, settings)
                checked = CheckedStream(plan.grounds, plan.lead, settings.chat.chat_max_sentences)
                stream = TextStream(tokenizer)
                go_on = lambda token: checked.push(stream.push(token))[1]  # noqa: E731  (stops as generate does)
            else:
                ids = prompt_ids(tokenizer, chat_messages(prompt, []))
            sent = time.perf_counter()

            def on_token(token: int) -> bool:
                times.append(time.perf_counter())
                return go_on(token)

            done = engine.submit(ids, settings.chat.chat_default_tokens, on_token, None, process).result()
            if not times:
                return
            with lock:
                level.runs.append(Run((times[0] - sent) * 1000, len(done.tokens), times[-1] - times[0]))

        results = {}
        for n in levels:
            results[n] = _level(n, rounds, one)
            name = "grounded" if grounded else "in-process"
            print(f"  {name}, {n} conversations: {len(results[n].runs)} replies in {results[n].wall_s:.1f} s")
        return results
    finally:
        engine.close()


def decoding_ab(settings: Settings, entries: dict[str, Any], rounds: int = 3) -> list[tuple[float, float]]:
    """(plain, grounded) tokens/s of one conversation per round: the processors' own cost, nothing else different.

    The replies of the rows above end where the check stops them, so their
    tokens/s mixes in how long each reply is; here every reply has 40 tokens.
    """
    from pipeline.messages import Prompt
    from pipeline.models.constraints import Vocabulary
    from pipeline.models.generator import load_generator
    from pipeline.stages.generate.prompting import grounded_plan, grounded_sequence

    engine, tokenizer = load_generator(settings)
    vocab = Vocabulary(tokenizer)
    plans = [grounded_plan(Prompt("b", text, entries=found), []) for text, found in entries.items() if found]
    plans = [plan for plan in plans if plan.lead][:4]
    if hasattr(engine, "eos"):
        engine.eos = set()  # 40 tokens every time, with or without the processors
    try:

        def rate(with_processors: bool) -> float:
            rates = []
            for plan in plans:
                ids, process = grounded_sequence(plan, tokenizer, vocab, settings)
                times: list[float] = []

                def on_token(_token: int, times: list[float] = times) -> bool:
                    times.append(time.perf_counter())
                    return True

                engine.submit(ids, 40, on_token, None, process if with_processors else None).result()
                rates.append((len(times) - 1) / (times[-1] - times[0]))
            return statistics.mean(rates)

        return [(rate(False), rate(True)) for _ in range(rounds)] if plans else []
    finally:
        engine.close()


def _level(n: int, rounds: int, one: Any) -> Level:
    """``n`` conversations at once, each ``rounds`` messages one after the other."""
    level, lock = Level(n), threading.Lock()

    def conversation(c: int) -> None:
        for r in range(rounds):
            one(QUESTIONS[(c + r * n) % len(QUESTIONS)] + ("" if r == 0 else f" ({c}.{r})"), level, lock)

    threads = [threading.Thread(target=conversation, args=(c,)) for c in range(n)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    level.wall_s = time.perf_counter() - began
    return level
