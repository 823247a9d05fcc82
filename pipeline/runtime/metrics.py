"""Each member's Prometheus metrics, named by Prometheus conventions (base units, ``_total``, ``_seconds``).

Every metric has a ``stage`` label; the member is the scrape target. The
runner records what every stage has in common (records in and out, dead
letters by code, batch size, handler and commit time, how long records waited
before this stage took them, in-flight records, paused state); infer adds its
token and padding counts. ``PIPELINE_METRICS_PORT`` (0: off) is where a member
serves them; ``pipeline up`` gives each member its own port from that base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from pipeline.messages import DEAD_LETTER_PREFIX
from pipeline.models.batching import TOKENS  # noqa: F401  (counted by infer; served here with the rest)
from pipeline.records import Output

# Latency buckets from 1 ms to 1 min: hops are milliseconds, generation seconds.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

RECORDS_IN = Counter("pipeline_records_in_total", "Records consumed from the stage's source topic", ["stage"])
RECORDS_OUT = Counter("pipeline_records_out_total", "Records produced, by topic", ["stage", "topic"])
DEAD_LETTERS = Counter("pipeline_dead_letters_total", "Records dead-lettered, by error code", ["stage", "code"])
ANSWERS = Counter("pipeline_answers_total", "Answers produced, by status (ok or the error code)", ["stage", "status"])
BATCH_SIZE = Histogram("pipeline_batch_records", "Records per batch handed to the stage's logic", ["stage"],
                       buckets=SIZES)  # fmt: skip
HANDLER_SECONDS = Histogram("pipeline_handler_seconds", "Time in the stage's logic per batch (infer: the model)",
                            ["stage"], buckets=SECONDS)  # fmt: skip
COMMIT_SECONDS = Histogram("pipeline_commit_seconds", "Time to commit a batch (transaction or flush and commit)",
                           ["stage"], buckets=SECONDS)  # fmt: skip
WAIT_SECONDS = Histogram("pipeline_record_wait_seconds",
                         "Time from a record being written to this stage taking it: the hop's latency",
                         ["stage"], buckets=SECONDS)  # fmt: skip
IN_FLIGHT = Gauge("pipeline_in_flight_records", "Records polled and not yet committed", ["stage"])
PAUSED = Gauge("pipeline_paused", "1 while the consumer is paused at its in-flight bound", ["stage"])


def serve(port: int) -> None:
    """Serve /metrics on ``port`` (0: do not serve)."""
    if port > 0:
        start_http_server(port)


class MetricsSink(Protocol):
    """Something else that wants what the runner reports (pipeline.runtime.telemetry.TelemetryEmitter)."""

    def batch(self, records: int, handler_s: float, waits_s: Sequence[float]) -> None: ...

    def delivered(self, outputs: Sequence[Output], commit_s: float) -> None: ...


class StageMetrics:
    """The metrics of one stage, as the runner records them."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.sinks: list[MetricsSink] = []

    def attach(self, sink: MetricsSink) -> None:
        """Also hand every batch and delivery to ``sink`` (the telemetry emitter)."""
        self.sinks.append(sink)

    def batch(self, records: int, handler_s: float, waits_s: Sequence[float]) -> None:
        for sink in self.sinks:
            sink.batch(records, handler_s, waits_s)
        RECORDS_IN.labels(self.stage).inc(records)
        BATCH_SIZE.labels(self.stage).observe(records)
        HANDLER_SECONDS.labels(self.stage).observe(handler_s)
        for wait in waits_s:
            WAIT_SECONDS.labels(self.stage).observe(max(wait, 0.0))

    def delivered(self, outputs: Sequence[Output], commit_s: float) -> None:
        for sink in self.sinks:
            sink.delivered(outputs, commit_s)
        COMMIT_SECONDS.labels(self.stage).observe(commit_s)
        for output in outputs:
            RECORDS_OUT.labels(self.stage, output.topic).inc()
            if output.topic == "dead-letters":
                code = dict(output.headers).get(DEAD_LETTER_PREFIX + "code", b"?").decode("utf-8", "replace")
                DEAD_LETTERS.labels(self.stage, code).inc()
            elif output.topic == "answers" and output.value:
                ANSWERS.labels(self.stage, _answer_status(output.value)).inc()

    def flow(self, in_flight: int, paused: bool) -> None:
        IN_FLIGHT.labels(self.stage).set(in_flight)
        PAUSED.labels(self.stage).set(1 if paused else 0)


def _answer_status(value: bytes) -> str:
    # Cheaper than decoding the answer: the status and code are near its start.
    if b'"status":"ok"' in value:
        return "ok"
    start = value.find(b'"code":"')
    if start < 0:
        return "error"
    end = value.find(b'"', start + 8)
    return value[start + 8 : end].decode("utf-8", "replace") if end > 0 else "error"
