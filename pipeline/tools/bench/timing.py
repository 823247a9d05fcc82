"""Produce requests and time their answers, for ``pipeline bench``.

Like the chaos suite's load generator (:mod:`pipeline.tools.bench.loadgen`) it speaks
only Kafka, but it is built for timing: the reader waits for the first answer
with ``poll`` and then takes what is already fetched, so an answer is stamped
when it arrives, not when a batch of 500 fills or a timeout passes; and each
answer keeps the per-hop latencies the pipeline wrote into it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from pipeline.errors import DecodeError
from pipeline.messages import Answer
from pipeline.runtime.config import consumer_config, producer_config
from pipeline.settings import Settings
from pipeline.tools.bench.loadgen import assign_answers


class RequestSender:
    """Produces request values to ``requests`` and keeps when each was handed to the producer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent: dict[str, float] = {}  # id -> time.time() at produce
        self.producer = Producer(
            producer_config(settings, f"{settings.kafka.prefix}bench-sender-{uuid.uuid4().hex[:6]}")
        )

    def send(self, request_id: str, value: bytes) -> None:
        self.sent[request_id] = time.time()
        while True:
            try:
                self.producer.produce(self.settings.topic("requests"), key=request_id.encode(), value=value)
                break
            except BufferError:
                self.producer.poll(0.01)
        self.producer.poll(0)

    def pace(self, make: Callable[[int], tuple[str, bytes]], count: int, per_second: float) -> None:
        """Send ``count`` requests at ``per_second``, on a fixed schedule (late sends catch up at once)."""
        began = time.monotonic()
        for index in range(count):
            wait = began + index / per_second - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.send(*make(index))
        self.producer.flush(30)

    def close(self) -> None:
        self.producer.flush(10)


class AnswerTimer:
    """Reads ``answers`` from their end at start; keeps each answer's arrival time and hop latencies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.arrived: dict[str, float] = {}  # id -> time.time() when read (the first arrival)
        self.hops: dict[str, dict[str, float]] = {}
        self.failed: dict[str, str] = {}  # id -> error code, for answers that are not ok
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        client_id = f"{settings.kafka.prefix}bench-timer-{uuid.uuid4().hex[:6]}"
        self.consumer = Consumer(consumer_config(settings, f"{client_id}-unused", client_id))
        assign_answers(self.consumer, settings)
        self.thread = threading.Thread(target=self._read, name="bench-answers", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped.is_set():
            first = self.consumer.poll(0.1)
            if first is None:
                continue
            now = time.time()
            for message in [first, *self.consumer.consume(num_messages=1000, timeout=0)]:
                if message.error() is not None:
                    continue
                try:
                    answer = Answer.decode(message.value())
                except DecodeError:
                    continue
                with self.lock:
                    if answer.id in self.arrived:
                        continue
                    self.arrived[answer.id] = now
                    self.hops[answer.id] = answer.latency_ms
                    if answer.error is not None:
                        self.failed[answer.id] = answer.error.code

    def wait_for(self, ids: set[str], timeout_s: float) -> bool:
        """Wait until every id in ``ids`` has an answer, or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if ids <= self.arrived.keys():
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.consumer.close()
