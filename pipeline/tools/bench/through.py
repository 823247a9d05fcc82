"""The Kafka rows of the bench: the naive consumer, and the pipeline under one processing guarantee.

The pipeline runs as ``pipeline up`` runs it (one local process per member,
on the local broker, under a topic prefix of its own), with the answer cache
off so every request reaches the model. Each run measures, in order:

* **saturation**: a burst of requests, answers counted between the first and
  the last to arrive; CPU seconds of every member and of the broker from
  ``/proc`` before and after, divided by the requests;
* **light load**: 10 requests a second, end-to-end latency per request
  (handed to the producer → answer read);
* **half load**: half of the measured saturation rate, the same latency.
"""

from __future__ import annotations

import math
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.settings import PROJECT_ROOT, Guarantee, Settings
from pipeline.tools.bench.stats import CpuSnapshot, cpu_per_request, listening_pid, percentile, rate

Say = Callable[[str], None]
STAGES = ("filter", "split", "infer", "merge")
LIGHT_RATE = 10.0
# Members per stage of one pipeline row; a stage not named runs one.
Members = tuple[tuple[str, int], ...]
ONE: Members = tuple((stage, 1) for stage in STAGES)


def parse_members(text: str) -> tuple[Members, ...]:
    """``--members``: ``1,2`` (infer members, one row each) or per-stage settings separated by ``;``.

    ``filter=2,split=2,infer=1,merge=2;infer=4`` is two rows; a stage a
    setting does not name runs one member.
    """
    text = text.strip()
    usage = f"--members {text!r}: write infer counts (1,2) or STAGE=N[,STAGE=N...] with STAGE in {', '.join(STAGES)}"
    if "=" not in text:
        infer = [n.strip() for n in text.split(",")]
        if not all(n.isdigit() and int(n) >= 1 for n in infer):
            raise ValueError(usage)
        return tuple(members(infer=int(n)) for n in infer)
    rows = []
    for setting in text.split(";"):
        counts: dict[str, int] = {}
        for item in setting.split(","):
            stage, sep, count = item.partition("=")
            stage = stage.strip()
            if not sep or stage not in STAGES or not count.strip().isdigit() or int(count) < 1:
                raise ValueError(usage)
            counts[stage] = int(count)
        rows.append(members(**counts))
    return tuple(rows)


def members(**counts: int) -> Members:
    """Members per stage in the flow's order, one where not given."""
    return tuple((stage, counts.get(stage, 1)) for stage in STAGES)


def members_label(counts: Members) -> str:
    """How a row names its members: ``""`` for one each, ``2 infer``, ``filter 2, split 2, infer 1, merge 2``."""
    more = {stage: n for stage, n in counts if n != 1}
    if not more:
        return ""
    if set(more) == {"infer"}:
        return f"{more['infer']} infer"
    return ", ".join(f"{stage} {n}" for stage, n in counts)


@dataclass
class Plan:
    """How much load each phase gets (``--quick`` makes all of it small)."""

    burst: int = 2000
    light_s: float = 10.0
    half_s: float = 8.0
    warmup: int = 40


@dataclass
class Latency:
    rate: float
    p50_ms: float
    p99_ms: float
    count: int
    hops_p50_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class PipelineRow:
    name: str
    guarantee: str
    members: int  # infer's
    throughput: float = math.nan
    light: Latency | None = None
    half: Latency | None = None
    cpu_per_request: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # members per stage
    errors: int = 0
    model_ms: float = math.nan  # one text through the model alone, measured between the phases
    notes: list[str] = field(default_factory=list)


def embed_request(request_id: str, text: str) -> bytes:
    return orjson.dumps({"id": request_id, "task": "embed", "text": text})


def naive_row(settings: Settings, model: Callable[[bytes], bytes], corpus: Sequence[str], count: int,
              say: Say) -> tuple[float, dict[str, float]]:  # fmt: skip
    """Texts per second of the naive consumer on ``count`` waiting requests, and its CPU per request."""
    from pipeline.operations.admin import apply_topics
    from pipeline.tools.bench.naive import naive_consume
    from pipeline.tools.bench.timing import RequestSender

    settings = settings.replace(prefix=f"{settings.kafka.prefix}naive-")
    apply_topics(settings)
    sender = RequestSender(settings)
    for index in range(count):
        sender.send(f"n{index}", embed_request(f"n{index}", corpus[index % len(corpus)]))
    sender.close()
    pids = {"naive": os.getpid(), **_broker(settings)}
    before = CpuSnapshot.take(pids)
    done, seconds = naive_consume(settings, model, count, timeout_s=120 + count / 5)
    after = CpuSnapshot.take(pids)
    throughput = rate(done, 0.0, seconds)
    say(f"  naive consumer: {done} requests, {throughput:.1f} texts/s")
    return throughput, cpu_per_request(before, after, max(done, 1))


def pipeline_row(settings: Settings, guarantee: str, members: Members, corpus: Sequence[str], plan: Plan,
                 say: Say, label: str = "", probe: Callable[[], float] | None = None,
                 source: Path | None = None) -> PipelineRow:  # fmt: skip
    """Start the pipeline under ``guarantee`` with ``members`` per stage, measure it, stop it.

    ``probe`` times one text through the model alone (ms), between saturation and light load.
    ``source``: the members run the code of that checkout instead of this one.
    """
    from pipeline.local.cluster import prepare, wait_ready
    from pipeline.local.supervisor import Supervisor

    variant = f"v{zlib.crc32(label.encode()) % 10_000}" if label else ""  # rows with a label get topics of their own
    tag = ("eo" if Guarantee(guarantee).transactional else "alo") + variant
    counts = dict(members)
    shape = "".join(f"{stage[0]}{n}" for stage, n in members if n != 1) if members != ONE else "1"
    settings = settings.replace(
        prefix=f"{settings.kafka.prefix}{tag}{shape}-", processing_guarantee=Guarantee(guarantee)
    )
    more = members_label(members)
    name = f"pipeline {guarantee}" + (f", {more}" if more else "") + label
    row = PipelineRow(name, guarantee, counts["infer"], counts=counts)
    prepare(settings, say=lambda _: None)
    log_dir = PROJECT_ROOT / ".cache" / "logs" / "bench" / settings.kafka.prefix.rstrip("-")
    supervisor = Supervisor(counts, settings, log_dir, source=source)
    say(f"  {row.name}: starting {', '.join(f'{s} {n}' for s, n in counts.items())} (logs {log_dir})")
    supervisor.start()
    try:
        if not wait_ready(
            settings, counts, threading.Event(), timeout_s=300, on_wait=supervisor.check, turning=supervisor.turning
        ):
            raise SystemExit(f"the pipeline did not come up; see {log_dir}")
        _measure(settings, supervisor, row, corpus, plan, say, probe)
    finally:
        supervisor.stop()
    return row


def _measure(settings: Settings, supervisor: Any, row: PipelineRow, corpus: Sequence[str], plan: Plan,
             say: Say, probe: Callable[[], float] | None) -> None:  # fmt: skip
    from pipeline.tools.bench.timing import AnswerTimer, RequestSender

    timer, sender = AnswerTimer(settings), RequestSender(settings)
    counter = iter(range(10**9))

    def make(phase: str) -> Callable[[int], tuple[str, bytes]]:
        def one(_: int) -> tuple[str, bytes]:
            n = next(counter)
            return f"{phase}{n}", embed_request(f"{phase}{n}", corpus[n % len(corpus)])

        return one

    try:
        warm = _phase(sender, timer, make("w"), plan.warmup, 50.0, 120)
        say(f"  {row.name}: warmed up ({len(warm)} answers)")
        pids = {**supervisor.pids(), **_broker(settings)}
        before = CpuSnapshot.take(pids)
        ids = _phase(sender, timer, make("s"), plan.burst, 1e9, 120 + plan.burst / 20)
        after = CpuSnapshot.take(pids)
        # Only answers with a result count: a request shed at its deadline is quick and says nothing.
        arrivals = sorted(timer.arrived[i] for i in ids if i in timer.arrived and i not in timer.failed)
        row.throughput = rate(len(arrivals), arrivals[0], arrivals[-1]) if arrivals else math.nan
        row.cpu_per_request = cpu_per_request(before, after, len(ids))
        say(f"  {row.name}: saturation {row.throughput:.1f} texts/s ({len(arrivals)}/{plan.burst} answered ok)")
        if len(arrivals) < plan.burst:
            row.notes.append(f"{plan.burst - len(arrivals)} of {plan.burst} saturation requests not answered ok")
        if probe is not None:
            row.model_ms = probe()  # the model alone, now: under the same load as the latencies that follow
        row.light = _latency(sender, timer, make("l"), LIGHT_RATE, plan.light_s)
        say(f"  {row.name}: light load {LIGHT_RATE:.0f}/s: p50 {row.light.p50_ms:.1f} ms, "
            f"p99 {row.light.p99_ms:.1f} ms")  # fmt: skip
        if not math.isnan(row.throughput):
            row.half = _latency(sender, timer, make("h"), row.throughput / 2, plan.half_s)
            say(f"  {row.name}: half load {row.half.rate:.0f}/s: p50 {row.half.p50_ms:.1f} ms, "
                f"p99 {row.half.p99_ms:.1f} ms")  # fmt: skip
        row.errors = len(timer.failed)
        if timer.failed:
            row.notes.append(f"{len(timer.failed)} error answers, e.g. {next(iter(timer.failed.values()))}")
    finally:
        sender.close()
        timer.close()


def _phase(sender: Any, timer: Any, make: Callable[[int], tuple[str, bytes]], count: int, per_second: float,
           timeout_s: float) -> set[str]:  # fmt: skip
    """Send ``count`` requests at ``per_second`` and wait for their answers; their ids."""
    first = len(sender.sent)
    sender.pace(make, count, per_second)
    ids = set(list(sender.sent)[first:])
    timer.wait_for(ids, timeout_s)
    return ids


def _latency(sender: Any, timer: Any, make: Callable[[int], tuple[str, bytes]], per_second: float,
             seconds: float) -> Latency:  # fmt: skip
    ids = _phase(sender, timer, make, max(int(per_second * seconds), 2), per_second, 60)
    took = [(timer.arrived[i] - sender.sent[i]) * 1000 for i in ids if i in timer.arrived]
    hops: dict[str, list[float]] = {}
    for i in ids:
        for hop, ms in timer.hops.get(i, {}).items():
            hops.setdefault(hop, []).append(ms)
    return Latency(per_second, percentile(took, 0.5), percentile(took, 0.99), len(took),
                   {hop: percentile(values, 0.5) for hop, values in hops.items()})  # fmt: skip


def _broker(settings: Settings) -> dict[str, int]:
    """The broker's process, when it runs on this machine and this user can see it."""
    host, _, port = settings.kafka.bootstrap_servers.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        return {}
    pid = listening_pid(int(port), Path("/proc"))
    return {"broker": pid} if pid else {}
