"""Peak resident memory of named processes, sampled from /proc while a scenario runs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

Pids = Callable[[], dict[str, int]]


def rss_mb(pid: int) -> float | None:
    """The resident set size of ``pid`` in MiB (None when it is gone or /proc is absent)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemorySampler:
    """Samples every process ``pids()`` names every ``interval_s`` and keeps each name's peak.

    A restarted member keeps its name, so its peak covers all its lives.
    """

    def __init__(self, pids: Pids, interval_s: float = 0.5) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.peaks: dict[str, float] = {}
        self.first: dict[str, float] = {}  # each name's first sample, to tell growth from a peak
        self.last: dict[str, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos-memory", daemon=True)

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)

    def sample(self) -> None:
        for name, pid in self.pids().items():
            mb = rss_mb(pid)
            if mb is None:
                continue
            self.first.setdefault(name, mb)
            self.last[name] = mb
            if mb > self.peaks.get(name, 0.0):
                self.peaks[name] = mb

    def _run(self) -> None:
        while not self.stopped.is_set():
            # A hiccup (a process gone between listing and reading) must not end the scenario.
            with contextlib.suppress(Exception):
                self.sample()
            self.stopped.wait(self.interval_s)
