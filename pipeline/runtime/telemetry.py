"""Send a member's telemetry reports (pipeline/telemetry.py) to the ``telemetry`` topic, outside any transaction.

The runner's metrics call :meth:`batch` and :meth:`delivered` (through
:meth:`pipeline.runtime.metrics.StageMetrics.attach`); at most once per interval a
:class:`~pipeline.telemetry.StageReport` is produced, keyed by stage. A
delivery sends the report that is due; a thread of the emitter's own sends it
when no delivery comes (the last answers of a burst before the member goes
quiet would otherwise wait, unseen by the monitor, for the next request). It is
fire and forget: a report that cannot be sent is dropped and logged once,
never retried at the expense of answers, and it never raises into the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.records import Output
from pipeline.runtime.config import telemetry_producer_config
from pipeline.settings import Settings
from pipeline.telemetry import TOPIC, Aggregator, StageReport

log = logging.getLogger("pipeline.telemetry")


class TelemetryEmitter:
    """One member's reports, produced at most every ``settings.liveness.telemetry_interval_ms``."""

    def __init__(self, settings: Settings, stage: str, member: str, producer: Producer | None = None) -> None:
        self.topic = settings.topic(TOPIC)
        self.stage = stage
        self.aggregator = Aggregator(stage, member, settings.liveness.telemetry_interval_ms / 1000, time.time())
        self.producer = producer or Producer(telemetry_producer_config(settings, f"{member}-telemetry"))
        # batch() runs on the handler's thread, delivered() on the loop's.
        self.lock = threading.Lock()
        self.failed = False
        # Sends what an interval gathered when no delivery does (a quiet member).
        self.stopped = threading.Event()
        self.flusher = threading.Thread(target=self._flush_quiet, name=f"{member}-telemetry", daemon=True)
        self.flusher.start()

    def batch(self, records: int, handler_s: float, waits_s: Sequence[float]) -> None:
        with self.lock:
            self.aggregator.batch(records, handler_s, waits_s)

    def delivered(self, outputs: Sequence[Output], commit_s: float) -> None:
        with self.lock:
            self.aggregator.delivered(outputs, commit_s)
        self.send_due()

    def send_due(self) -> None:
        """Send the interval's report if the interval is over (and something happened in it)."""
        with self.lock:
            now = time.time()
            report = self.aggregator.take(now) if self.aggregator.due(now) else None
        if report is not None:
            self.send(report)

    def send(self, report: StageReport) -> None:
        try:
            self.producer.produce(self.topic, key=self.stage.encode(), value=report.encode(), on_delivery=self._sent)
        except (BufferError, KafkaException) as exc:
            self._warn(f"dropped a telemetry report: {exc}")
        self.producer.poll(0)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what the last interval gathered; wait briefly for it."""
        self.stopped.set()
        self.flusher.join(timeout_s)
        with self.lock:
            report = self.aggregator.take(time.time())
        if report is not None:
            self.send(report)
        self.producer.flush(timeout_s)

    def _flush_quiet(self) -> None:
        # Twice an interval: a report is at most half an interval late after its interval ends.
        while not self.stopped.wait(max(self.aggregator.interval_s / 2, 0.05)):
            self.send_due()

    def _sent(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._warn(f"a telemetry report was not delivered to {self.topic}: {error}")

    def _warn(self, text: str) -> None:
        if not self.failed:  # once: telemetry trouble must not flood the member's log
            log.warning("%s (telemetry is best effort; the stage goes on)", text)
            self.failed = True
