"""The bench's pure math: percentiles, rates, ratios and CPU seconds per request.

CPU time comes from ``/proc/PID/stat`` (utime + stime, children excluded),
read before and after a run; no sampling, so a process that only woke up for
the run is counted exactly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rate(count: int, first: float, last: float) -> float:
    """Items per second between the first and the last of ``count`` arrivals (intervals, not items)."""
    if count < 2 or last <= first:
        return math.nan
    return (count - 1) / (last - first)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the denominator is not positive."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds the process ``pid`` has used so far (fields 14 and 15 of its stat)."""
    text = (proc / str(pid) / "stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per named process at one moment; processes that are gone read as missing."""

    seconds: dict[str, float]

    @classmethod
    def take(cls, pids: Mapping[str, int], proc: Path = Path("/proc")) -> CpuSnapshot:
        seconds: dict[str, float] = {}
        for name, pid in pids.items():
            try:
                seconds[name] = cpu_seconds(pid, proc)
            except (OSError, ValueError, IndexError):
                continue  # exited (or restarted) during the run: no honest number for it
        return cls(seconds)


def cpu_per_request(before: CpuSnapshot, after: CpuSnapshot, requests: int) -> dict[str, float]:
    """CPU seconds per request of each process present in both snapshots, grouped by name prefix.

    Names are ``stage-index`` (``infer-0``, ``infer-1``) or ``broker``: members of
    one stage are summed under the stage's name.
    """
    if requests <= 0:
        raise ValueError(f"requests must be positive, got {requests}")
    totals: dict[str, float] = {}
    for name, end in after.seconds.items():
        if name not in before.seconds:
            continue
        group = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
        totals[group] = totals.get(group, 0.0) + max(end - before.seconds[name], 0.0)
    return {group: spent / requests for group, spent in totals.items()}


def listening_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The process that listens on TCP ``port`` (IPv4 or IPv6), if this user can see it."""
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is ADDR:PORT in hex; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name)
        except OSError:
            continue
    return None
