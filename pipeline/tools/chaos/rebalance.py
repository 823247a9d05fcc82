"""Scaling under load, per consumer group protocol: what a rebalance costs the requests sent while it runs.

``pipeline chaos rebalance`` runs :func:`scale_under_load` once per protocol
(``classic`` with cooperative-sticky assignment, and KIP-848's ``consumer``),
each on a fresh pipeline under the same steady load: every stage scaled to
two members, held, then back to one, as ``pipeline scale`` does
(``Supervisor.resize``). *The change* is from the first resize until every
group is back to one member and the retired processes are gone; the numbers
that matter are those of the requests sent during it: the share not ``ok``
and the p99 (docs/reliability.md: <= 0.1 % and <= 2 s).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.operations.groups import group_members
from pipeline.settings import Settings
from pipeline.settings_env import GROUP_PROTOCOLS
from pipeline.tools.bench.loadgen import Arrival
from pipeline.tools.chaos.cluster import ChaosBroker, Pipeline, process_ids, running
from pipeline.tools.chaos.load import Load, Say
from pipeline.tools.chaos.scenarios import Options, Scenario, dump_answers
from pipeline.tools.chaos.tally import Row, percentile

SCALED = ("filter", "split", "infer", "merge")
"""The answer path's stages; generate has its own group on prompts and no load here."""


@dataclass(frozen=True)
class Change:
    """The requests sent while the groups changed, and how long each step took to settle."""

    protocol: str
    seconds: float
    sent: int
    not_ok: int
    unanswered: int
    p50_ms: float | None
    p99_ms: float | None
    up_s: float | None  # resize to 2 until every group had 2 members turning their loops
    down_s: float | None  # resize to 1 until every group had 1 member and the retired ones had exited
    up_p99_ms: float | None = None  # requests sent from the scale-up until the scale-down began
    down_p99_ms: float | None = None  # requests sent from the scale-down on

    @property
    def not_ok_share(self) -> float:
        return (self.not_ok + self.unanswered) / max(1, self.sent)

    def line(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} ms"

        def s(value: float | None) -> str:
            return "not settled" if value is None else f"{value:.1f} s"

        return (
            f"{self.protocol}: during the change ({self.seconds:.0f} s) {self.sent} sent, "
            f"{self.not_ok + self.unanswered} not ok ({self.not_ok_share:.2%}), p50 {ms(self.p50_ms)}, "
            f"p99 {ms(self.p99_ms)} (sent while scaling up {ms(self.up_p99_ms)}, down {ms(self.down_p99_ms)}); "
            f"scale up settled in {s(self.up_s)}, down in {s(self.down_s)}"
        )


def window(protocol: str, acked: Mapping[str, float], arrivals: Sequence[Arrival], start: float, end: float,
           up_s: float | None = None, down_s: float | None = None) -> Change:  # fmt: skip
    """The requests acknowledged in [start, end): how many, how many not ok or never answered, p50 and p99."""
    first: dict[str, Arrival] = {}
    for arrival in arrivals:
        first.setdefault(arrival.id, arrival)
    sent = {rid: at for rid, at in acked.items() if start <= at < end}
    answered = {rid: first[rid] for rid in sent if rid in first}
    latencies = sorted((a.at - sent[rid]) * 1000 for rid, a in answered.items())
    return Change(
        protocol=protocol,
        seconds=end - start,
        sent=len(sent),
        not_ok=sum(1 for a in answered.values() if (a.code or a.status) != "ok"),
        unanswered=len(sent) - len(answered),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        up_s=up_s,
        down_s=down_s,
    )


def settle(pipeline: Pipeline, count: int, timeout_s: float) -> float | None:
    """Seconds until every scaled stage's group has ``count`` members and its processes are the supervisor's
    own, turning their loops (None: not within ``timeout_s``)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        supervisor = pipeline.supervisor
        supervisor.check()
        alive = [m for m in supervisor.members if m.stage in SCALED]
        if (
            all(sum(m.stage == stage for m in alive) == count for stage in SCALED)
            and supervisor.turning()
            and all(n == count for n in group_members(pipeline.settings, SCALED).values())
        ):
            return time.monotonic() - began
        time.sleep(0.2)
    return None


def scale_under_load(settings: Settings, rate: float, short: bool, timeout_ms: int, protocol: str, say: Say,
                     broker: ChaosBroker | None = None) -> tuple[Row, Change]:  # fmt: skip
    """One protocol: steady load, every answer-path stage to 2 members and back to 1; the row and the change.

    ``settings``: the broker to run on (``broker``: the suite's own, whose memory is sampled too).
    """
    if protocol not in GROUP_PROTOCOLS:
        raise ValueError(f"group protocol {protocol!r}: use one of {', '.join(GROUP_PROTOCOLS)}")
    warm, hold = (8.0, 6.0) if short else (15.0, 20.0)
    name = f"rebalance-{protocol}"
    counts = dict.fromkeys(SCALED, 1)  # no chat in this load: generate would only take CPU
    with running(settings, counts, name, group_protocol=protocol) as pipeline:
        pids = process_ids(broker, pipeline) if broker is not None else pipeline.supervisor.pids
        load = Load(pipeline.settings, name, timeout_ms, pids)
        load.start(rate)
        time.sleep(warm)
        start = time.time()
        say(f"{name}: scaling {', '.join(SCALED)} to 2 under {rate:.0f} requests/s")
        for stage in SCALED:
            pipeline.supervisor.resize(stage, 2)
        up_s = settle(pipeline, 2, 120.0)
        time.sleep(hold)
        say(f"{name}: scaled up in {up_s if up_s is not None else float('nan'):.1f} s; back to 1")
        mid = time.time()
        for stage in SCALED:
            pipeline.supervisor.resize(stage, 1)
        down_s = settle(pipeline, 1, 60.0)
        time.sleep(hold / 2)
        end = time.time()
        say(f"{name}: scaled down in {down_s if down_s is not None else float('nan'):.1f} s")
        time.sleep(hold / 2)
        load.drain(say)
        acked = dict(load.sender.acked)
        row = load.row([], pipeline.restarts(), pipeline.startup_restarts)
    arrivals = load.reader.snapshot()
    change = dataclasses.replace(
        window(protocol, acked, arrivals, start, end, up_s, down_s),
        up_p99_ms=window(protocol, acked, arrivals, start, mid).p99_ms,
        down_p99_ms=window(protocol, acked, arrivals, mid, end).p99_ms,
    )
    row.notes.append(f"{rate:.1f} requests/s; {', '.join(SCALED)} 1 -> 2 -> 1")
    dump_answers(pipeline.log_dir / "answers.jsonl", acked, arrivals)  # per request: sent, answered, code
    row.notes.append(change.line())
    return row, change


def rebalance_classic(broker: ChaosBroker, opts: Options, say: Say) -> Row:
    return scale_under_load(broker.settings, opts.rate, opts.short, opts.timeout_ms, "classic", say, broker)[0]


def rebalance_consumer(broker: ChaosBroker, opts: Options, say: Say) -> Row:
    return scale_under_load(broker.settings, opts.rate, opts.short, opts.timeout_ms, "consumer", say, broker)[0]


SCENARIOS: dict[str, Scenario] = {"rebalance-classic": rebalance_classic, "rebalance-consumer": rebalance_consumer}
