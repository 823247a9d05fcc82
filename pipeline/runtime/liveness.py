"""A member's liveness: a watchdog that ends a stuck process, and a health file that says how it is.

librdkafka bounds most calls by a timeout, but not all of them hold it (a
transactional commit against a broker that went away has been seen to block
for minutes), and a member that no longer makes progress but stays alive
holds its partitions while nothing is answered. So the loop *beats* the
watchdog on every turn, naming what it is about to do and how long that may
take; if a beat is overdue the watchdog logs why and ends the process with
:data:`EXIT_STALLED`, and whatever supervises it (``pipeline up``, docker,
Kubernetes) starts a new one, which fences the old one's transactions and
redoes its uncommitted work.

The health file (JSON, rewritten atomically about once a second) is what a
probe or ``pipeline up`` reads: ``at`` is when the loop last turned.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("pipeline.liveness")

EXIT_STALLED = 70  # EX_SOFTWARE: the member stopped making progress
HEALTH_EVERY_S = 1.0


class Watchdog:
    """Ends the process when the loop has not beaten for longer than it said it might take."""

    def __init__(self, name: str, *, exit_code: int = EXIT_STALLED) -> None:
        self.name = name
        self.exit_code = exit_code
        self.phase = "starting"
        self.deadline = float("inf")
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stopped = threading.Event()

    def beat(self, phase: str, budget_s: float) -> None:
        """The loop is alive and about to do ``phase``, which may take up to ``budget_s``."""
        with self.lock:
            self.phase = phase
            self.deadline = time.monotonic() + budget_s

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def overdue(self) -> float:
        """Seconds past the deadline of the current phase (negative: still within it)."""
        with self.lock:
            return time.monotonic() - self.deadline

    def _watch(self) -> None:
        while not self.stopped.wait(0.5):
            late = self.overdue()
            if late > 0:
                code = 0 if self.phase == "stopping" else self.exit_code
                log.critical(
                    "%s: no progress: '%s' overran its time by %.1f s; exiting (%d) so the member is restarted "
                    "and its uncommitted work redone",
                    self.name, self.phase, late, code,
                )  # fmt: skip
                # Where every thread is stuck (which librdkafka call blocked past its own timeout).
                faulthandler.dump_traceback(all_threads=True)
                logging.shutdown()
                os._exit(code)


def exit_after_signal(name: str, budget_s: float) -> None:
    """After SIGTERM, SIGINT or SIGUSR1 (retired), end the process within ``budget_s``, whatever it is blocked in.

    Python runs a signal's handler (which asks the loop to stop) only once the
    main thread is back in the interpreter; a librdkafka call waiting on a
    broker that went away comes back only after its own timeout (a
    transaction's is 30 s), so a member told to stop with the broker down took
    20 s to go, and generate more than 30 s. The interpreter's C-level handler
    still writes the signal's number to the wakeup fd at once: this thread
    reads it and starts the clock. What the member had not committed is redone
    by the next owner of its partitions. Call from the main thread, after the
    handlers are installed.
    """
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def watch() -> None:
        while not any(number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) for number in os.read(read, 64)):
            pass
        time.sleep(budget_s)
        log.critical("%s: still running %.0f s after it was told to stop; exiting (0) now, its uncommitted "
                     "work is redone by the next owner", name, budget_s)  # fmt: skip
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watch, name=f"{name}-stop-deadline", daemon=True).start()


class HealthFile:
    """A small JSON file saying the member is alive and what it is doing (for probes and ``pipeline up``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.written = 0.0

    def write(self, state: dict[str, Any], *, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.time()
        if not force and now - self.written < HEALTH_EVERY_S:
            return
        self.written = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({**state, "at": now, "pid": os.getpid()}))
        tmp.replace(self.path)


def read_health(path: Path) -> dict[str, Any] | None:
    """A member's last health record, or None if it never wrote one (or it is unreadable)."""
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
