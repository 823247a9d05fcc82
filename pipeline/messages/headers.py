"""Record headers: what any stage needs without decoding a value.

The deadline (epoch ms), a W3C trace context, one timestamp per hop, so the
answer can report where its time went, and what it cost so far (CPU ms per
stage, model ms). Unknown headers pass through untouched.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.messages.deadline import now_ms

DEADLINE_HEADER = "pipeline-deadline-ms"
TRACE_HEADER = "traceparent"
HOP_PREFIX = "pipeline-hop-"
COST_PREFIX = "pipeline-cost-"
"""``pipeline-cost-<stage>``: CPU ms the stage spent on the record (its share of a batch);
``pipeline-cost-model``: model ms (infer's share of its batch's run). A repeated name adds up."""
SCATTERED_COSTS = frozenset({"split", "infer", "model"})
"""Costs charged per part: merge adds them over a request's parts (the others came copied into every part)."""
REQUESTED_HOP = "requested"
"""The hop recorded for the client's produce time (the request record's timestamp)."""

MAX_SAFE_MS = 2.0**53
"""Epoch milliseconds beyond this are not a time (and do not survive JSON or a float)."""

HeaderList = list[tuple[str, bytes]]
RawHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
"""Headers as Kafka clients hand them over: a list of pairs, or a mapping."""


KafkaHeaders = list[tuple[str, str | bytes | None]]
"""What confluent-kafka's produce() takes."""


def header_list(raw: RawHeaders) -> HeaderList:
    """Headers from any Kafka client as a plain list of (name, bytes)."""
    items = raw.items() if isinstance(raw, Mapping) else (raw or ())
    return [(key, (value.encode() if isinstance(value, str) else value) or b"") for key, value in items]


def kafka_headers(headers: HeaderList) -> KafkaHeaders:
    return [(key, value) for key, value in headers]


def new_traceparent() -> str:
    """A fresh W3C traceparent: version 00, random trace and span ids, sampled."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


@dataclass(slots=True)
class Headers:
    """The pipeline's view of a record's headers.

    Unknown headers are kept and passed on untouched, so clients can add their
    own (tenant, correlation ids) and see them again on the answer.
    """

    deadline_ms: int | None = None
    traceparent: str | None = None
    hops: dict[str, float] = field(default_factory=dict)
    other: HeaderList = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)  # what the record cost so far, ms by stage (and model)

    @classmethod
    def parse(cls, raw: RawHeaders) -> Headers:
        # Every stage parses every record's headers (a dozen of them): one pass
        # over what the client handed over, no copy of the list first.
        headers = cls()
        hops, costs, other = headers.hops, headers.costs, headers.other
        for key, value in raw.items() if isinstance(raw, Mapping) else (raw or ()):
            if not isinstance(value, bytes):
                value = value.encode() if isinstance(value, str) else b""
            if key.startswith(HOP_PREFIX):
                at = _number(value)
                if at is not None and math.isfinite(at):  # a malformed hop (or NaN, inf) is dropped, not fatal
                    hops[key[len(HOP_PREFIX) :]] = at
            elif key.startswith(COST_PREFIX):
                ms = _number(value)
                if ms is not None and math.isfinite(ms) and ms >= 0:
                    name = key[len(COST_PREFIX) :]
                    costs[name] = costs.get(name, 0.0) + ms
            elif key == DEADLINE_HEADER:
                deadline = _number(value)
                # Garbage, NaN, infinities and times past 2**53 ms are no deadline.
                headers.deadline_ms = int(deadline) if deadline is not None and abs(deadline) < MAX_SAFE_MS else None
            elif key == TRACE_HEADER:
                headers.traceparent = value.decode("utf-8", "replace")
            else:
                other.append((key, value))
        return headers

    def stamped(self, hop: str, at_ms: float | None = None) -> Headers:
        """A copy with ``hop`` recorded at ``at_ms`` (now by default)."""
        hops = dict(self.hops)
        hops[hop] = now_ms() if at_ms is None else at_ms
        return Headers(self.deadline_ms, self.traceparent, hops, list(self.other), dict(self.costs))

    def to_list(self) -> HeaderList:
        out: HeaderList = list(self.other)
        if self.deadline_ms is not None:
            out.append((DEADLINE_HEADER, str(self.deadline_ms).encode()))
        if self.traceparent:
            out.append((TRACE_HEADER, self.traceparent.encode()))
        for hop, at in self.hops.items():
            out.append((HOP_PREFIX + hop, f"{at:.3f}".encode()))
        for name, ms in self.costs.items():
            out.append((COST_PREFIX + name, f"{ms:.3f}".encode()))
        return out

    def latency_ms(self) -> dict[str, float]:
        """Time spent reaching each hop from the one before, in hop order."""
        ordered = sorted(self.hops.items(), key=lambda kv: kv[1])
        return {hop: round(at - prev, 3) for (_, prev), (hop, at) in itertools.pairwise(ordered)}


def _number(value: bytes) -> float | None:
    """An ASCII decimal header value (float() reads the bytes as they are); None for anything else."""
    try:
        return float(value) if value.isascii() else None
    except ValueError:
        return None
