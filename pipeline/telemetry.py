"""The telemetry record every member writes about once a second, for the monitor.

Topic ``telemetry`` (keyed by stage), written **without** transactions: the
monitor (faust-streaming) reads without read_committed, so it must only ever
see records that are final, and telemetry must never hold up an answer. One
:class:`StageReport` sums what one member did in one interval: records taken,
batches and time in the stage's logic, answers by status (``ok`` or the error
code), dead letters by code with the latest few, and latency samples per hop
taken from the answers' ``latency_ms`` (where each request's time went), and
what the answers cost by task (:func:`charge` puts a batch's CPU ms on its
outputs' headers; the stage that answers sums the answers' costs here).

:class:`Aggregator` builds the reports from the same two calls the runner
makes for its Prometheus metrics (``batch`` and ``delivered``); it is pure
(the clock is passed in), so tests build reports by hand. The producer that
sends them is :class:`pipeline.runtime.telemetry.TelemetryEmitter`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import orjson

from pipeline.messages import COST_PREFIX, DEAD_LETTER_PREFIX, Headers
from pipeline.messages.codec import Codec, encode
from pipeline.records import Output

TOPIC = "telemetry"
SAMPLES_PER_HOP = 200  # latency samples per hop and report: enough for a p99 per minute
LATEST_DEAD = 5
TOTAL_HOP = "total"  # the end-to-end latency: from the client's produce to the answer
# Topics whose records carry a request on towards its answer: a batch's cost is shared among them.
CARRIES = frozenset({"filtered", "parts", "results", "answers", "prompts"})
MODEL_STAGE = "infer"  # its handler's time is the model's run: charged as model ms too
COST_KINDS = ("answers", "cpu_ms", "model_ms", "tokens_in", "tokens_out", "cached")


def charge(outputs: list[Output], stage: str, cpu_ms: float, handler_ms: float) -> list[Output]:
    """A batch's CPU ms (and infer's model ms), measured once, shared equally among the outputs that carry
    a request on, as ``pipeline-cost-<stage>`` headers (see :class:`pipeline.messages.Headers`)."""
    carrying = sum(1 for o in outputs if o.topic in CARRIES)
    if not carrying:
        return outputs
    extra = [(COST_PREFIX + stage, f"{cpu_ms / carrying:.3f}".encode())]
    if stage == MODEL_STAGE:
        extra.append((COST_PREFIX + "model", f"{handler_ms / carrying:.3f}".encode()))
    return [Output(o.topic, o.key, o.value, [*o.headers, *extra], o.partition) if o.topic in CARRIES else o
            for o in outputs]  # fmt: skip


class StageReport(msgspec.Struct, frozen=True, omit_defaults=True):  # a field at its default is left out
    stage: str
    member: str
    at_ms: float  # end of the interval (epoch ms)
    span_s: float
    records: int = 0
    batches: int = 0
    handler_s: float = 0.0
    answers: dict[str, int] = msgspec.field(default_factory=dict)  # "ok" or error code -> count
    dead_letters: dict[str, int] = msgspec.field(default_factory=dict)  # code -> count
    latest_dead: list[dict[str, str]] = msgspec.field(default_factory=list)  # code, reason, source, key
    hops_ms: dict[str, list[float]] = msgspec.field(default_factory=dict)  # hop -> latency samples (ms)
    costs: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)  # task -> COST_KINDS -> sum

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> StageReport:
        """A report from its bytes; anything else raises :class:`~pipeline.errors.DecodeError`."""
        return _REPORT.decode(data)


_REPORT = Codec(StageReport, "telemetry: not a stage report")


@dataclass
class Aggregator:
    """Sums one member's batches and deliveries into a :class:`StageReport` per interval."""

    stage: str
    member: str
    interval_s: float
    started: float  # epoch seconds the current interval began
    records: int = 0
    batches: int = 0
    handler_s: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    latest_dead: list[dict[str, str]] = field(default_factory=list)
    hops_ms: dict[str, list[float]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # samples offered per hop (for the reservoir)
    costs: dict[str, dict[str, float]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def batch(self, records: int, handler_s: float, waits_s: Sequence[float]) -> None:
        self.records += records
        self.batches += 1
        self.handler_s += handler_s

    def delivered(self, outputs: Sequence[Output], commit_s: float) -> None:
        for output in outputs:
            if output.topic == "answers" and output.value:
                self._answer(output.value, output.headers)
            elif output.topic == "dead-letters":
                self._dead_letter(output)

    def due(self, now: float) -> bool:
        return now - self.started >= self.interval_s

    def take(self, now: float) -> StageReport | None:
        """The report of the interval ending ``now`` (None if nothing happened), and start the next."""
        report = None
        if self.batches or self.answers or self.dead_letters:
            report = StageReport(self.stage, self.member, now * 1000, round(now - self.started, 3), self.records,
                                 self.batches, round(self.handler_s, 6), self.answers, self.dead_letters,
                                 self.latest_dead, self.hops_ms, self.costs)  # fmt: skip
        self.started, self.records, self.batches, self.handler_s = now, 0, 0, 0.0
        self.answers, self.dead_letters, self.latest_dead, self.hops_ms, self.seen = {}, {}, [], {}, {}
        self.costs = {}
        return report

    def _answer(self, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        try:
            answer = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(answer, dict):
            return
        error = answer.get("error") or {}
        status = "ok" if answer.get("status") == "ok" else str(error.get("code", "error"))
        self.answers[status] = self.answers.get(status, 0) + 1
        latency = answer.get("latency_ms") or {}
        if isinstance(latency, dict) and latency:
            for hop, ms in latency.items():
                if isinstance(ms, int | float):
                    self._sample(str(hop), float(ms))
            self._sample(TOTAL_HOP, float(sum(v for v in latency.values() if isinstance(v, int | float))))
        self._cost(answer, headers)

    def _cost(self, answer: dict[str, object], headers: Sequence[tuple[str, bytes]]) -> None:
        """Sum what the answer cost into its task's row: its headers' CPU and model ms, chat's tokens."""
        costs = Headers.parse(headers).costs if any(k.startswith(COST_PREFIX) for k, _ in headers) else {}
        row = self.costs.setdefault(str(answer.get("task") or "(no task)"), dict.fromkeys(COST_KINDS, 0.0))
        row["answers"] += 1
        row["cpu_ms"] += sum(ms for name, ms in costs.items() if name != "model")
        row["model_ms"] += costs.get("model", 0.0)
        row["cached"] += bool(answer.get("cached"))
        result = answer.get("result")
        tokens = result.get("tokens") if isinstance(result, dict) else None
        if isinstance(tokens, dict):
            row["tokens_in"] += float(tokens.get("prompt") or 0)
            row["tokens_out"] += float(tokens.get("completion") or 0)

    def _sample(self, hop: str, ms: float) -> None:
        """Reservoir sampling: every answer of the interval equally likely to be among the kept samples."""
        samples = self.hops_ms.setdefault(hop, [])
        seen = self.seen.get(hop, 0) + 1
        self.seen[hop] = seen
        if len(samples) < SAMPLES_PER_HOP:
            samples.append(round(ms, 3))
        else:
            slot = self.rng.randrange(seen)
            if slot < SAMPLES_PER_HOP:
                samples[slot] = round(ms, 3)

    def _dead_letter(self, output: Output) -> None:
        reason = {k[len(DEAD_LETTER_PREFIX) :]: v.decode("utf-8", "replace") for k, v in output.headers
                  if k.startswith(DEAD_LETTER_PREFIX)}  # fmt: skip
        code = reason.get("code", "?")
        self.dead_letters[code] = self.dead_letters.get(code, 0) + 1
        key = (output.key or b"").decode("utf-8", "replace")
        entry = {"code": code, "reason": reason.get("reason", "")[:200], "source": reason.get("source", ""), "key": key}
        self.latest_dead = [*self.latest_dead, entry][-LATEST_DEAD:]


# -- what the monitor computes from reports ---------------------------------------------

# Latency histogram buckets (ms, upper bounds): fixed, so windows merge by adding counts.
BUCKETS_MS: tuple[float, ...] = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 1500,
                                 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000, 120000, 300000,
                                 float("inf"))  # fmt: skip


def histogram(samples: Sequence[float]) -> list[int]:
    """Counts per bucket of :data:`BUCKETS_MS`."""
    counts = [0] * len(BUCKETS_MS)
    for ms in samples:
        counts[next(i for i, bound in enumerate(BUCKETS_MS) if ms <= bound)] += 1
    return counts


def merge_counts(a: Sequence[int], b: Sequence[int]) -> list[int]:
    if not a:
        return list(b)
    return [x + y for x, y in zip(a, b, strict=True)]


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (None without samples), as Prometheus estimates it."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    running = 0
    for count, bound in zip(counts, BUCKETS_MS, strict=True):
        running += count
        if running >= rank:
            return bound if bound != float("inf") else BUCKETS_MS[-2]
    return BUCKETS_MS[-2]


def error_rate(answers: dict[str, int]) -> float:
    """The share of answers that are errors (0 when there were none)."""
    total = sum(answers.values())
    return 0.0 if not total else round(1 - answers.get("ok", 0) / total, 4)
