"""How many members a stage should have: the autoscaler's decision, as a pure function.

``pipeline up --autoscale`` (and the monitor's scaling advice) call
:func:`decide` once per reading of each stage's group with what was measured
(:class:`Load`), what it remembers from earlier readings (:class:`Memory`) and
the rules (:class:`Policy`); it returns a :class:`Decision` that names its
inputs, so every decision can be logged and replayed. No clock, no Kafka, no
processes here: tests drive it with simulated load.

The size a stage needs::

    desired = ceil((arrival + lag / target_drain_s) / per_member_rate)

capped at the source topic's partitions (more members would sit idle) and a
per-stage maximum. Around it, the rules that keep it from flapping:

* **up in steps**, at most ``max_step_up`` members at a time, and not again
  before ``up_cooldown_s``, which is longer than a member's start and model
  load, so the last step shows in the rates before the next is taken;
* **down slowly**: one member at a time, only after the stage needed fewer
  members (with ``down_headroom`` to spare) for ``down_after_s`` without a
  break, and ``down_cooldown_s`` after any change;
* **never grow a stage whose downstream is backlogged**: more output would
  only wait longer in the next topic;
* the **per-member rate** is learnt: a member's share of the consume rate
  while records wait (it is working flat out, so that is its capacity), and
  never less than what members deliver without a backlog.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Policy:
    """The rules, one set for every stage (``max_members`` per stage)."""

    # How fast a backlog should be gone: the lag term adds lag / target_drain_s to the arrival rate.
    target_drain_s: float = 60.0
    # Longer than a member's start and model load (infer: ~10-20 s here), so
    # the effect of one step is measured before the next.
    up_cooldown_s: float = 45.0
    max_step_up: int = 2
    # Down one member at a time, after the need stayed lower this long ...
    down_after_s: float = 120.0
    down_cooldown_s: float = 120.0
    # ... with this much spare capacity left on the members that stay (0.8: they would run at most 80 % busy).
    down_headroom: float = 0.8
    min_members: int = 1
    max_members: dict[str, int] = field(default_factory=dict)
    # A backlog: at least this many records waiting, the oldest for at least
    # backlog_s (a few hundred records of fresh lag at 400/s is normal flow).
    backlog_records: int = 50
    backlog_s: float = 5.0
    # Learning the per-member rate: weight of a new saturated reading.
    rate_smoothing: float = 0.3
    # Per-member rate to assume before any is measured (records/s); 0: grow one step at a time until measured.
    initial_member_rate: float = 0.0


@dataclass(frozen=True)
class Load:
    """One reading of one stage: what ``pipeline status`` shows, plus the topology."""

    stage: str
    members: int  # members in the group, consuming
    partitions: int
    arrival_rate: float  # records/s written to the source topic
    consume_rate: float  # records/s committed by the group
    lag: int  # records waiting
    lag_s: float | None = None  # age of the oldest waiting record
    downstream: str | None = None  # the stage that reads what this one writes
    downstream_backlogged: bool = False
    # Members started but not yet in the group (loading their model): they
    # count towards the size, but not towards the measured per-member rate.
    starting: int = 0


@dataclass(frozen=True)
class Memory:
    """What a stage's decisions remember between readings."""

    member_rate: float = 0.0  # learnt records/s one member handles (0: unknown)
    last_change_at: float = -math.inf
    below_since: float | None = None  # since when fewer members would do


@dataclass(frozen=True)
class Decision:
    stage: str
    at: float
    current: int
    desired: int  # what the stage gets now (== current when holding)
    needed: int  # the formula's answer, capped, before the up/down rules
    action: str  # "up", "down" or "hold"
    reason: str
    inputs: dict[str, Any]

    @property
    def changes(self) -> bool:
        return self.desired != self.current

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One log line: the decision and every input it was made from."""
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.inputs.items())
        return f"{self.stage}: {self.action} {self.current} -> {self.desired} ({self.reason}); {shown}"


def decide(load: Load, memory: Memory, policy: Policy, now: float) -> tuple[Decision, Memory]:
    """The members ``load.stage`` should have now, and what to remember for next time."""
    rate = learn_rate(load, memory, policy)
    memory = replace(memory, member_rate=rate)
    cap = cap_for(load, policy)
    backlog = has_backlog(load, policy)
    demand = load.arrival_rate + (load.lag / policy.target_drain_s if backlog else 0.0)
    current = load.members + load.starting
    if rate > 0:
        wanted = math.ceil(demand / rate - 1e-9)
        needed = _clamp(wanted, policy.min_members, cap)
        if not backlog:
            # Keeping up: more members would not answer sooner. (Without a
            # backlog the learnt rate is only a lower bound of capacity.)
            needed = min(needed, max(current, policy.min_members))
        # What the stage would need with headroom: the bar for going down.
        comfortable = _clamp(math.ceil(demand / (rate * policy.down_headroom) - 1e-9), policy.min_members, cap)
    else:  # nothing learnt yet: grow one step while a backlog builds, never shrink blind
        wanted = current + 1 if backlog else current
        needed = _clamp(wanted, policy.min_members, cap)
        comfortable = max(needed, current)
    inputs = {
        "members": load.members,
        "starting": load.starting,
        "arrival_rate": round(load.arrival_rate, 2),
        "consume_rate": round(load.consume_rate, 2),
        "lag": load.lag,
        "lag_s": None if load.lag_s is None else round(load.lag_s, 1),
        "member_rate": round(rate, 2),
        "demand": round(demand, 2),
        "backlog": backlog,
        "wanted": wanted,
        "cap": cap,
        "partitions": load.partitions,
        "downstream": load.downstream,
        "downstream_backlogged": load.downstream_backlogged,
    }

    def result(desired: int, action: str, reason: str, remembered: Memory) -> tuple[Decision, Memory]:
        decision = Decision(load.stage, now, current, desired, needed, action, reason, inputs)
        if desired != current:
            remembered = replace(remembered, last_change_at=now, below_since=None)
        return decision, remembered

    since_change = now - memory.last_change_at
    if current < policy.min_members:
        return result(policy.min_members, "up", f"below the minimum of {policy.min_members}", memory)
    if current > cap:
        return result(cap, "down", f"above the cap of {cap}", memory)
    if needed > current:
        memory = replace(memory, below_since=None)
        if load.downstream_backlogged:
            return result(current, "hold", f"would grow to {needed}, but downstream {load.downstream} is backlogged",
                          memory)  # fmt: skip
        if load.starting:
            return result(current, "hold", f"would grow to {needed}; {load.starting} member(s) still starting",
                          memory)  # fmt: skip
        if since_change < policy.up_cooldown_s:
            return result(current, "hold", f"would grow to {needed}; cooling down ({since_change:.0f} s of "
                          f"{policy.up_cooldown_s:.0f} s since the last change)", memory)  # fmt: skip
        desired = min(needed, current + policy.max_step_up)
        step = "" if desired == needed else f" (a step towards {needed})"
        return result(desired, "up", f"demand {demand:.1f}/s over {rate or 0:.1f}/s per member{step}", memory)
    if comfortable < current:
        below_since = memory.below_since if memory.below_since is not None else now
        memory = replace(memory, below_since=below_since)
        if now - below_since < policy.down_after_s:
            return result(current, "hold", f"{comfortable} would do; waiting {policy.down_after_s:.0f} s "
                          f"({now - below_since:.0f} s so far)", memory)  # fmt: skip
        if since_change < policy.down_cooldown_s:
            return result(current, "hold", f"{comfortable} would do; cooling down ({since_change:.0f} s of "
                          f"{policy.down_cooldown_s:.0f} s since the last change)", memory)  # fmt: skip
        return result(current - 1, "down", f"{comfortable} would do for {now - below_since:.0f} s; one member less",
                      memory)  # fmt: skip
    if backlog and wanted > current == cap:
        return result(current, "hold", f"at its cap of {cap} (partitions or --max); {wanted} would drain the backlog",
                      replace(memory, below_since=None))  # fmt: skip
    return result(current, "hold", "sized right", replace(memory, below_since=None))


def learn_rate(load: Load, memory: Memory, policy: Policy) -> float:
    """Records/s one member of the stage handles, learnt from the readings so far."""
    known = memory.member_rate or policy.initial_member_rate
    if load.members <= 0 or load.consume_rate <= 0:
        return known
    observed = load.consume_rate / load.members
    if has_backlog(load, policy):
        # Records wait, so the members work flat out: this is their capacity.
        # A higher reading replaces what quiet readings suggested (those were
        # lower bounds); a lower one is smoothed in (one slow batch is noise).
        if observed >= memory.member_rate:
            return observed
        return (1 - policy.rate_smoothing) * memory.member_rate + policy.rate_smoothing * observed
    # Without a backlog members deliver what arrives: capacity is at least that.
    return max(known, observed)


def has_backlog(load: Load, policy: Policy) -> bool:
    """Records wait, and not just for a moment (the age is used when it is known)."""
    return load.lag >= policy.backlog_records and (load.lag_s is None or load.lag_s >= policy.backlog_s)


def cap_for(load: Load, policy: Policy) -> int:
    """At most one member per partition of the source topic, and at most the stage's maximum."""
    cap = load.partitions if load.partitions > 0 else 1
    maximum = policy.max_members.get(load.stage)
    return max(policy.min_members, min(cap, maximum) if maximum else cap)


def parse_limits(text: str) -> dict[str, int]:
    """``"infer=4,filter=2"`` → ``{"infer": 4, "filter": 2}``; raises ValueError naming the bad part."""
    limits: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        stage, sep, count = item.partition("=")
        if not sep or not stage.strip() or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{item!r} is not STAGE=N with N a positive whole number")
        limits[stage.strip()] = int(count)
    return limits


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
