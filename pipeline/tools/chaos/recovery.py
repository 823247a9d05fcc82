"""How fast a killed member came back: from its kill to its restart's partitions, and to its first answer.

kill-each's notes (pipeline.tools.chaos.scenarios): per SIGKILL, the new
process's time to get its partitions back (from its log) and the first
request answered through it after the kill.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.tools.bench.loadgen import Arrival
from pipeline.tools.chaos.tally import recovery


def restart_to_assigned(kills: list[tuple[str, float, float | None]], log_dir: Path) -> list[str]:
    """Per member: new process -> its partitions assigned again, from the member's log (its start, model
    load and group join; static membership gives its own partitions back without a rebalance)."""
    notes = []
    for member in dict.fromkeys(m for m, _, _ in kills):
        stamps = _assigned_times(log_dir / f"{member}.log")
        took = []
        for name, _, respawned in kills:
            if name != member:
                continue
            later = [t for t in stamps if respawned is not None and t >= respawned]
            took.append(f"{min(later) - respawned:.1f}" if later and respawned is not None else "never")
        notes.append(f"{member}: new process -> partitions assigned {' / '.join(took)} s")
    return notes


def _assigned_times(path: Path) -> list[float]:
    # Lines like "2026-11-29 01:37:16,862 INFO pipeline.runner split: assigned ..." (local time).
    found = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        if " pipeline.runner " in line and ": assigned " in line:
            try:
                stamp, millis = line[:23].split(",")
                found.append(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000)
            except ValueError:
                continue
    return found


def kill_recoveries(
    kills: list[tuple[str, float, float | None]], acked: dict[str, float], arrivals: list[Arrival]
) -> list[str]:
    """Per stage: SIGKILL -> new process, and SIGKILL -> first answer to a request sent after the kill.

    With one member per stage, a request produced after the kill reaches the
    killed stage only through its new process, so the second time is the
    restart, the member's start (imports, model load, joining its group) and
    its first committed batch, plus the rest of the pipeline's latency for
    that one request: an upper bound on "restart to processing".
    """
    first: dict[str, Arrival] = {}
    for arrival in arrivals:
        first.setdefault(arrival.id, arrival)
    notes = []
    for member in dict.fromkeys(m for m, _, _ in kills):
        spawned, answered, through = [], [], []
        for name, killed_at, respawned in kills:
            if name != member:
                continue
            spawned.append("never" if respawned is None else f"{respawned - killed_at:.1f}")
            back = recovery(killed_at, acked, first)
            answered.append("never" if back is None else f"{back:.1f}")
            # The same answer counted from the new process: its start to processing, plus the pipeline's latency.
            late = None if back is None or respawned is None else killed_at + back - respawned
            through.append("never" if late is None else f"{late:.1f}")
        notes.append(
            f"{member}: SIGKILL -> new process {' / '.join(spawned)} s; "
            f"SIGKILL -> first answer to a request sent after it {' / '.join(answered)} s; "
            f"new process -> that answer {' / '.join(through)} s"
        )
    return notes
