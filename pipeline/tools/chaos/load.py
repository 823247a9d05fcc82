"""Steady request load at a fixed rate, and the drain that waits for every answer.

The requests are two-question ``faq`` messages (two parts each), produced as
raw JSON with a deadline in the value and the ``pipeline-deadline-ms``
header, exactly as a client in any language would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson

from pipeline.messages import DEADLINE_HEADER, TRACE_HEADER, new_traceparent
from pipeline.settings import Settings
from pipeline.tools.bench.loadgen import AnswerReader, Sender
from pipeline.tools.chaos.memory import MemorySampler
from pipeline.tools.chaos.tally import Row, count

MESSAGES = (
    "Where is my order? And how do I return a parcel?",
    "How do I reset my password? Can I pay with PayPal?",
    "Do you ship to Norway? How long does delivery take?",
    "Can I change my delivery address? Is there a student discount?",
    "How do I cancel my order? When will I get my refund?",
)

Say = Callable[[str], None]


class Load:
    """One scenario's traffic: a sender thread, the answer reader and the memory sampler."""

    def __init__(self, settings: Settings, name: str, timeout_ms: int, pids: Callable[[], dict[str, int]]) -> None:
        self.settings = settings
        self.name = name
        self.timeout_ms = timeout_ms
        self.sender = Sender(settings)
        self.reader = AnswerReader(settings)
        self.sampler = MemorySampler(pids).__enter__()
        self.count = 0
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def request(self) -> tuple[str, bytes, list[tuple[str, bytes]]]:
        # The Load's name is in the id: the capacity probe and the scenario after it share a
        # prefix, and merge answers an id once (its tombstone), so a reused id is never answered.
        rid = f"{self.settings.kafka.prefix}{self.name}-r{self.count:06d}"
        deadline = int(time.time() * 1000) + self.timeout_ms
        text = MESSAGES[self.count % len(MESSAGES)]
        self.count += 1
        value = orjson.dumps({"id": rid, "task": "faq", "text": text, "deadline_ms": deadline})
        headers = [(DEADLINE_HEADER, str(deadline).encode()), (TRACE_HEADER, new_traceparent().encode())]
        return rid, value, headers

    def send_one(self) -> None:
        rid, value, headers = self.request()
        self.sender.send(rid, value, headers=headers)

    def start(self, rate: float) -> None:
        """Send ``rate`` requests a second in the background until :meth:`stop_sending`."""
        self.stop_event.clear()
        self.thread = threading.Thread(target=self._pace, args=(rate,), name="chaos-load", daemon=True)
        self.thread.start()

    def _pace(self, rate: float) -> None:
        began = time.monotonic()
        sent = 0
        while not self.stop_event.is_set():
            due = began + sent / rate
            wait = due - time.monotonic()
            if wait > 0:
                self.stop_event.wait(wait)
                continue
            self.send_one()
            sent += 1

    def stop_sending(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10)
            self.thread = None

    def burst(self, n: int) -> None:
        """Produce ``n`` requests as fast as the producer takes them."""
        for _ in range(n):
            self.send_one()

    def drain(self, say: Say, *, extra_s: float = 20.0) -> None:
        """Wait for every acknowledged request's answer: at most its deadline plus ``extra_s``."""
        self.stop_sending()
        unsent = self.sender.flush(200)
        if unsent:
            say(f"{self.name}: {unsent} requests still unacknowledged after 200 s")
        acked = dict(self.sender.acked)
        answered = lambda arrivals: not set(acked) - {a.id for a in arrivals}  # noqa: E731
        wait = self.timeout_ms / 1000 + extra_s
        if not self.reader.wait_for(answered, wait):
            say(f"{self.name}: not every request answered {wait:.0f} s after the last was sent")
        time.sleep(3.0)  # anything later than this is a duplicate we want to see

    def row(self, fault_ends: list[float], restarts: int, startup_restarts: int = 0) -> Row:
        self.sampler.__exit__()
        self.reader.close()
        row = count(self.name, self.sender.acked, self.sender.refused, self.reader.snapshot(), fault_ends)
        row.peak_rss_mb = dict(self.sampler.peaks)
        row.restarts = restarts
        if startup_restarts:
            row.notes.append(f"{startup_restarts} member restart(s) while the pipeline started, before any load")
        return row
