"""The member's telemetry emitter: a quiet member still sends the report its last deliveries made."""

from __future__ import annotations

import threading
import time
from typing import Any

from pipeline.runtime.telemetry import TelemetryEmitter
from pipeline.settings import Settings
from pipeline.telemetry import StageReport
from tests.unit.test_telemetry import answer


class Recorder:
    """What the emitter produces (the part of confluent-kafka's Producer it uses)."""

    def __init__(self) -> None:
        self.reports: list[StageReport] = []
        self.arrived = threading.Condition()

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        with self.arrived:
            self.reports.append(StageReport.decode(value))
            self.arrived.notify_all()

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def wait_for(self, n: int, timeout_s: float) -> list[StageReport]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.reports) >= n, timeout_s)
            return list(self.reports)


def test_the_answers_of_a_burst_are_reported_after_the_member_goes_quiet() -> None:
    producer = Recorder()
    emitter = TelemetryEmitter(Settings.of(telemetry_interval_ms=200), "merge", "merge-0", producer)  # type: ignore[arg-type]
    try:
        time.sleep(0.25)  # the first interval is over
        emitter.batch(1, 0.001, [])
        emitter.delivered([answer("a")], 0.001)
        assert [r.answers for r in producer.wait_for(1, timeout_s=5.0)] == [{"ok": 1}]
        # Two more answers within the next interval, then no delivery at all: they are sent anyway.
        emitter.batch(2, 0.001, [])
        emitter.delivered([answer("b"), answer("c", ok=False)], 0.001)
        reports = producer.wait_for(2, timeout_s=5.0)
        assert [r.answers for r in reports] == [{"ok": 1}, {"ok": 1, "too_large": 1}]
        assert reports[1].records == 2
        time.sleep(0.5)
        assert len(producer.reports) == 2, "intervals where nothing happened send nothing"
    finally:
        emitter.close()
    assert not emitter.flusher.is_alive()
