"""Send a member's telemetry reports (pipeline/telemetry.py) to the ``telemetry`` topic, outside any transaction.

The runner's metrics call :meth:`batch` and :meth:`delivered` (through
:meth:`pipeline.metrics.StageMetrics.attach`); at most once per interval a
:class:`~pipeline.telemetry.StageReport` is produced, keyed by stage. It is
fire and forget: a report that cannot be sent is dropped and logged once,
never retried at the expense of answers, and it never raises into the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.kafka.config import telemetry_producer_config
from pipeline.records import Output
from pipeline.settings import Settings
from pipeline.telemetry import TOPIC, Aggregator, StageReport

log = logging.getLogger("pipeline.telemetry")


class TelemetryEmitter:
    """One member's reports, produced at most every ``settings.telemetry_interval_ms``."""

    def __init__(self, settings: Settings, stage: str, member: str, producer: Producer | None = None) -> None:
        self.topic = settings.topic(TOPIC)
        self.stage = stage
        self.aggregator = Aggregator(stage, member, settings.telemetry_interval_ms / 1000, time.time())
        self.producer = producer or Producer(telemetry_producer_config(settings, f"{member}-telemetry"))
        # batch() runs on the handler's thread, delivered() on the loop's.
        self.lock = threading.Lock()
        self.failed = False

    def batch(self, records: int, handler_s: float, waits_s: Sequence[float]) -> None:
        with self.lock:
            self.aggregator.batch(records, handler_s, waits_s)

    def delivered(self, outputs: Sequence[Output], commit_s: float) -> None:
        with self.lock:
            self.aggregator.delivered(outputs, commit_s)
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
        with self.lock:
            report = self.aggregator.take(time.time())
        if report is not None:
            self.send(report)
        self.producer.flush(timeout_s)

    def _sent(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._warn(f"a telemetry report was not delivered to {self.topic}: {error}")

    def _warn(self, text: str) -> None:
        if not self.failed:  # once: telemetry trouble must not flood the member's log
            log.warning("%s (telemetry is best effort; the stage goes on)", text)
            self.failed = True
