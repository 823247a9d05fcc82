"""The control channel between ``pipeline scale`` and a running ``pipeline up``: two small files.

``pipeline up`` writes ``members.json`` in its log folder (its pid, each
stage's count, each member's name, pid, metrics port and health file) on start
and after every change. ``pipeline scale infer=3`` writes ``scale.json`` there
(the counts it wants and a fresh request number) and waits until
``members.json`` says that request was applied, or refused and why. Files,
not a socket: both sides are on one machine, nothing listens, and an operator
can read the state with ``cat``. Writes are atomic (write, then rename).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, PipelineError
from pipeline.local.process import alive
from pipeline.local.supervisor import Supervisor
from pipeline.settings import Settings

log = logging.getLogger("pipeline.local.control")

STATE_FILE = "members.json"
CONTROL_FILE = "scale.json"


class ScaleError(PipelineError):
    """A scaling request that cannot be carried out (no pipeline up, too many members, unknown stage)."""


def partitions_of(settings: Settings) -> dict[str, int]:
    """Each stage's ceiling: the declared partition count of its source topic."""
    from pipeline.flow import STAGES
    from pipeline.topics import load_topics

    declared = load_topics(settings)
    return {s.name: declared[s.source].partitions for s in STAGES if s.source in declared}


def check_counts(counts: dict[str, int], partitions: dict[str, int]) -> None:
    """Refuse unknown stages, negative counts and more members than partitions, naming the limit."""
    for stage, count in counts.items():
        if stage not in partitions:
            raise ScaleError(f"no stage {stage!r}; stages: {', '.join(partitions)}")
        if count < 0:
            raise ScaleError(f"{stage}={count}: a stage cannot have fewer than 0 members")
        if count > partitions[stage]:
            raise ScaleError(
                f"{stage}={count}: {stage} reads a topic of {partitions[stage]} partitions, so at most "
                f"{partitions[stage]} members get work; more would sit idle (add partitions to the topic first)"
            )


def parse_counts(items: list[str]) -> dict[str, int]:
    """``["infer=3", "split=2"]`` → ``{"infer": 3, "split": 2}``."""
    counts: dict[str, int] = {}
    for item in items:
        stage, sep, count = item.partition("=")
        try:
            counts[stage.strip()] = int(count)
        except ValueError:
            sep = ""
        if not sep or not stage.strip():
            raise ConfigError(f"{item!r}: say STAGE=N, e.g. infer=3")
    return counts


def write_state(supervisor: Supervisor, **extra: Any) -> dict[str, Any]:
    """Record what runs now in ``members.json`` (and ``extra``: the last request applied or refused)."""
    members = [
        {
            "name": m.name,
            "stage": m.stage,
            "index": m.index,
            "pid": m.process.pid if m.process is not None and m.process.poll() is None else None,
            "metrics_port": m.metrics_port or None,
            "health_file": str(m.health_path),
            "retiring": m.retiring_since is not None,
        }
        for m in supervisor.members
    ]
    state = {"pid": os.getpid(), "at": time.time(), "counts": dict(supervisor.counts), "members": members, **extra}
    _write_json(supervisor.log_dir / STATE_FILE, state)
    return state


def read_state(log_dir: Path) -> dict[str, Any] | None:
    """The running ``pipeline up``'s state, or None if none runs there."""
    state = _read_json(log_dir / STATE_FILE)
    if state is None or not alive(int(state.get("pid", 0))):
        return None
    return state


def request_scale(log_dir: Path, counts: dict[str, int], timeout_s: float = 15.0) -> dict[str, Any]:
    """Ask the ``pipeline up`` logging to ``log_dir`` for ``counts``; its state once it has answered."""
    if read_state(log_dir) is None:
        raise ScaleError(f"no `pipeline up` is running with logs in {log_dir} (start one, or pass its --log-dir)")
    request = time.time_ns()
    _write_json(log_dir / CONTROL_FILE, {"request": request, "counts": counts})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(log_dir)
        if state is None:
            raise ScaleError("`pipeline up` stopped before it answered")
        if state.get("request") == request:
            if state.get("refused"):
                raise ScaleError(str(state["refused"]))
            return state
        time.sleep(0.2)
    raise ScaleError(f"`pipeline up` did not answer within {timeout_s:.0f} s (is it stuck? see its output)")


@dataclass
class ControlChannel:
    """The ``pipeline up`` side: apply each new ``scale.json`` once."""

    supervisor: Supervisor
    partitions: dict[str, int]
    # Requests are numbered by time: one left from an earlier run is older than this channel.
    seen: int = field(default_factory=time.time_ns)
    # The answer to the last request (its number, and why it was refused), repeated in every state written.
    answer: dict[str, Any] = field(default_factory=dict)

    def poll(self) -> dict[str, int] | None:
        """Apply a new request if there is one; the counts applied (None: nothing new, or refused)."""
        request = _read_json(self.supervisor.log_dir / CONTROL_FILE)
        if request is None or int(request.get("request", 0)) <= self.seen:
            return None
        self.seen = int(request["request"])
        counts = {str(k): int(v) for k, v in dict(request.get("counts", {})).items()}
        try:
            check_counts(counts, self.partitions)
        except ScaleError as exc:
            log.warning("scale request refused: %s", exc)
            self.answer = {"request": self.seen, "refused": str(exc)}
            write_state(self.supervisor, **self.answer)
            return None
        for stage, count in counts.items():
            started, retired = self.supervisor.resize(stage, count)
            log.info("scaled %s to %d by request: started %s, retiring %s", stage, count, started, retired)
        self.answer = {"request": self.seen}
        write_state(self.supervisor, **self.answer)
        return counts


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(value, indent=1))
    partial.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
