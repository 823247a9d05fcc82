"""``pipeline up --autoscale``: read every stage's group, decide its size, resize it, log why.

Every ``interval_s`` the :class:`Autoscaler` takes the same reading ``pipeline
status`` does (two offset snapshots, compared), turns each stage's status
into a :class:`~pipeline.operations.scaling.Load` (with the members still starting and
whether the stage downstream of it is backlogged), asks
:func:`~pipeline.operations.scaling.decide`, and has the supervisor start or retire
members. Every decision, with its inputs, goes to the log (changes and
reasoned holds) and to ``autoscale.jsonl`` in the log folder (all of them).
It runs in a thread of its own, so the supervisor's restart loop never waits
on the cluster.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.operations.scaling import Decision, Load, Memory, Policy, decide
from pipeline.operations.status import GroupSnapshot, StageStatus, compare
from pipeline.settings import Settings

log = logging.getLogger("pipeline.autoscale")

Resize = Callable[[str, int], object]


def downstream_of(stages: list[tuple[str, str, tuple[str, ...]]]) -> dict[str, list[str]]:
    """For each (name, source, sinks) stage, the stages that read what it writes."""
    readers: dict[str, list[str]] = {}
    for name, source, _ in stages:
        readers.setdefault(source, []).append(name)
    return {name: [r for sink in sinks for r in readers.get(sink, []) if r != name] for name, _, sinks in stages}


def loads(
    statuses: list[StageStatus], counts: dict[str, int], downstream: dict[str, list[str]], policy: Policy
) -> list[Load]:
    """One Load per stage that runs, from one reading and the supervisor's counts."""
    by_stage = {s.stage: s for s in statuses}

    def backlogged(stage: str) -> bool:
        status = by_stage.get(stage)
        return status is not None and status.state in ("lagging", "stalled") and status.lag >= policy.backlog_records

    out = []
    for status in statuses:
        if not counts.get(status.stage):
            continue  # a stage run with 0 members is switched off, not scaled
        in_group = len(status.members)
        blocked = [d for d in downstream.get(status.stage, []) if backlogged(d)]
        out.append(
            Load(
                status.stage,
                min(in_group, counts[status.stage]),
                status.partitions,
                status.arrival_rate,
                status.consume_rate,
                status.lag,
                status.lag_s,
                downstream=", ".join(blocked) or ", ".join(downstream.get(status.stage, [])) or None,
                downstream_backlogged=bool(blocked),
                starting=max(0, counts[status.stage] - in_group),
            )
        )
    return out


@dataclass
class Autoscaler:
    settings: Settings
    counts: Callable[[], dict[str, int]]  # the supervisor's current counts
    resize: Resize
    policy: Policy
    log_path: Path
    interval_s: float = 10.0
    # Follow the monitor's advice (its /api/advice) instead of deciding here.
    advice_url: str | None = None
    caps: dict[str, int] = field(default_factory=dict)  # partitions per stage, for following advice
    memory: dict[str, Memory] = field(default_factory=dict)
    previous: list[GroupSnapshot] | None = None

    def step(self, statuses: list[StageStatus], now: float) -> list[Decision]:
        """Decide every stage from one reading and carry the changes out."""
        from pipeline.flow import STAGES

        downstream = downstream_of([(s.name, s.source, s.sinks) for s in STAGES])
        decisions = []
        for load in loads(statuses, self.counts(), downstream, self.policy):
            decision, self.memory[load.stage] = decide(load, self.memory.get(load.stage, Memory()), self.policy, now)
            decisions.append(decision)
            self._record(decision)
            if decision.changes:
                self.resize(decision.stage, decision.desired)
        return decisions

    def told(self, stage: str, now: float) -> None:
        """An operator resized ``stage`` by hand: wait a cooldown before overruling them."""
        memory = self.memory.get(stage, Memory())
        self.memory[stage] = Memory(memory.member_rate, now, None)

    def read(self) -> list[StageStatus]:
        """One reading of every stage: this snapshot compared with the last one."""
        from pipeline.flow import STAGES
        from pipeline.operations.lag import snapshot

        current = snapshot(self.settings, [(s.name, s.source) for s in STAGES])
        before, self.previous = self.previous, current
        if before is None:
            return []
        return [compare(b, a) for b, a in zip(before, current, strict=True)]

    def follow(self, advice: dict[str, Any]) -> list[tuple[str, int, str]]:
        """Resize the stages whose advised size differs from what runs: (stage, members, reason) for each."""
        changes: list[tuple[str, int, str]] = []
        for stage, count in self.counts().items():
            advised = advice.get(stage)
            members = advised.get("members") if isinstance(advised, dict) else None
            if not count or not isinstance(advised, dict) or not isinstance(members, int):
                continue
            cap = min(self.caps.get(stage, members), self.policy.max_members.get(stage, members))
            desired = max(self.policy.min_members, min(members, cap))
            if desired != count:
                changes.append((stage, desired, str(advised.get("reason", ""))))
        for stage, desired, reason in changes:
            log.info("autoscale: %s %d -> %d following the monitor's advice (%s)", stage, self.counts()[stage],
                     desired, reason)  # fmt: skip
            with self.log_path.open("a") as out:
                out.write(json.dumps({"stage": stage, "desired": desired, "advice": advice[stage], "wall": time.time()})
                          + "\n")  # fmt: skip
            self.resize(stage, desired)
        return changes

    def read_advice(self) -> dict[str, Any]:
        assert self.advice_url is not None
        with urllib.request.urlopen(self.advice_url, timeout=5) as response:
            advice = json.loads(response.read())
        return advice if isinstance(advice, dict) else {}

    def run(self, stop: threading.Event) -> None:
        """Read, decide and resize every ``interval_s`` until ``stop``; a failed reading is logged and retried."""
        while not stop.wait(self.interval_s):
            if self.advice_url:
                try:
                    self.follow(self.read_advice())
                except (OSError, ValueError) as exc:
                    log.warning("autoscale: no advice from %s (%s); trying again", self.advice_url, exc)
                continue
            try:
                statuses = self.read()
            except Exception as exc:  # the broker away for a moment must not end autoscaling
                log.warning("autoscale: cannot read the groups (%s); trying again in %.0f s", exc, self.interval_s)
                continue
            if statuses:
                self.step(statuses, time.monotonic())

    def _record(self, decision: Decision) -> None:
        if decision.changes:
            log.info("autoscale: %s", decision.line())
        elif decision.reason != "sized right":
            log.debug("autoscale: %s", decision.line())
        with self.log_path.open("a") as out:
            out.write(json.dumps({**decision.to_json(), "wall": time.time()}) + "\n")
