"""What an operator wants to know about each stage's consumer group, computed from two offset snapshots.

Pure: ``pipeline/operations/lag.py`` reads the snapshots from the cluster (committed
offsets, end offsets, members, the age of the oldest unconsumed record); this
module turns two of them, taken some seconds apart, into rates, time to drain
and a state, and renders them. Tests call it with snapshots built by hand.

States:

* ``ok``: nothing waits, or what waits is younger than ``LAGGING_AFTER_S``;
* ``lagging``: records wait longer than that, and the group's committed
  offsets move (it is working through them);
* ``stalled``: records wait and the committed offsets did not move between
  the snapshots (no member, a stuck member, or a crash loop);
* ``idle``: the group has no members and nothing waits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LAGGING_AFTER_S = 5.0


@dataclass(frozen=True)
class Member:
    client_id: str
    host: str
    partitions: tuple[int, ...]


@dataclass(frozen=True)
class GroupSnapshot:
    """One stage's group at one moment: offsets per partition of its source topic."""

    stage: str
    source: str
    at: float  # epoch seconds
    committed: dict[int, int]  # partition → committed offset (-1: none yet)
    ends: dict[int, int]  # partition → end offset (the next offset to be written)
    members: tuple[Member, ...] = ()
    oldest_age_s: float | None = None  # age of the oldest record not yet consumed, when known
    # Partitions where all that is past the committed offset is a transaction's
    # commit marker (an exactly_once stage's source, quiet): nothing waits there.
    markers: frozenset[int] = frozenset()

    @property
    def lag(self) -> int:
        waiting = sum(max(0, end - max(self.committed.get(p, -1), 0)) for p, end in self.ends.items())
        return waiting - len(self.markers)


@dataclass(frozen=True)
class StageStatus:
    stage: str
    source: str
    members: tuple[Member, ...]
    lag: int  # records waiting
    lag_s: float | None  # how long the oldest of them has waited
    consume_rate: float  # records per second committed by the group
    arrival_rate: float  # records per second written to its source topic
    drain_s: float | None  # time to drain at these rates; None: never (arrivals outpace the group)
    state: str
    partitions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(before: GroupSnapshot, after: GroupSnapshot) -> StageStatus:
    """The status of a stage from two snapshots of its group, ``before`` taken first."""
    span = max(after.at - before.at, 1e-3)
    consumed = sum(max(0, after.committed.get(p, -1) - max(before.committed.get(p, -1), 0))
                   for p in after.committed if after.committed.get(p, -1) >= 0)  # fmt: skip
    arrived = sum(max(0, end - before.ends.get(p, end)) for p, end in after.ends.items())
    consume_rate, arrival_rate = consumed / span, arrived / span
    lag = after.lag
    if lag == 0:
        drain: float | None = 0.0
    elif consume_rate > arrival_rate:
        drain = lag / (consume_rate - arrival_rate)
    else:
        drain = None
    lag_s = after.oldest_age_s if lag else 0.0
    if lag == 0:
        state = "ok" if after.members else "idle"
    elif consumed == 0:
        state = "stalled"
    elif lag_s is not None and lag_s < LAGGING_AFTER_S:
        state = "ok"
    else:
        state = "lagging"
    return StageStatus(after.stage, after.source, after.members, lag, lag_s, round(consume_rate, 2),
                       round(arrival_rate, 2), None if drain is None else round(drain, 1), state,
                       len(after.ends))  # fmt: skip


def render(statuses: list[StageStatus]) -> str:
    """A table for people: one line per stage, then its members."""
    header = f"{'stage':<9} {'state':<8} {'members':>7} {'lag':>7} {'lag s':>7} {'in/s':>7} {'out/s':>7} {'drain':>8}"
    lines = [header, "-" * len(header)]
    for s in statuses:
        drain = "never" if s.drain_s is None else _seconds(s.drain_s)
        lag_s = "?" if s.lag_s is None else _seconds(s.lag_s)
        lines.append(f"{s.stage:<9} {s.state:<8} {len(s.members):>7} {s.lag:>7} {lag_s:>7} "
                     f"{s.arrival_rate:>7.1f} {s.consume_rate:>7.1f} {drain:>8}")  # fmt: skip
        for m in s.members:
            parts = ",".join(str(p) for p in m.partitions) or "-"
            lines.append(f"    {m.client_id} on {m.host}: partitions {parts}")
    return "\n".join(lines)


def _seconds(value: float) -> str:
    if math.isinf(value):
        return "never"
    return f"{value:.1f}s" if value < 600 else f"{value / 60:.0f}m"
