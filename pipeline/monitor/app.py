"""``pipeline monitor``: the faust-streaming app that watches the whole pipeline, off the answers' path.

Built by :func:`build_app` from Settings (nothing happens at import time):

* an **agent** over the ``telemetry`` topic (members write it without
  transactions, so this consumer, which reads uncommitted records like every
  faust consumer outside exactly-once, only sees final records) adds each
  report to two windowed counting tables: tumbling 10 s and hopping 1 min
  (advancing every 10 s). Keys: answers by stage and status, dead letters by
  stage and code, records by stage, latency-bucket counts by hop (see
  :func:`pipeline.monitor.state.counter_keys`);
* a **timer on the leader** reads every stage's consumer group (the same
  reading as ``pipeline status``: lag in records and seconds, rates, time to
  drain, state) and turns it into scaling advice with the autoscaler's own
  decision function;
* **web views**: ``/`` the live page, ``/api/state`` its data,
  ``/api/advice`` the advice (``pipeline up --autoscale --advice URL``
  follows it), ``/metrics`` for Prometheus (and so for Kubernetes).

At-least-once is fine here: a report counted twice after a crash only nudges
a dashboard. It runs as one instance (the telemetry topic has one partition).
On a secured cluster it connects with the same TLS and SASL settings as every
other client (:mod:`pipeline.monitor.auth`), as the ``monitor`` principal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View
from mode.utils.times import want_seconds

from pipeline.errors import DecodeError
from pipeline.monitor.auth import credentials
from pipeline.monitor.page import PAGE
from pipeline.monitor.state import MonitorState, Window, counter_keys, prometheus_text
from pipeline.settings import Settings
from pipeline.telemetry import TOPIC, StageReport
from pipeline.topics import TopicSpec

log = logging.getLogger("pipeline.monitor")

LAG_EVERY_S = 5.0
EXPIRES = timedelta(minutes=10)


def build_app(settings: Settings, *, lag_every_s: float = LAG_EVERY_S) -> faust.App:
    """The monitor app for the cluster and prefix of ``settings``, its agent, tables, timer and pages."""
    from pipeline.flow import STAGES

    app = faust.App(
        settings.group("monitor"),  # the consumer group (and prefix of faust's own topics)
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(",")],
        # TLS and SASL as PIPELINE_SECURITY_PROTOCOL etc. say (None on PLAINTEXT).
        broker_credentials=credentials(settings),
        store="memory://",  # windows of the last minutes: rebuilt from their changelogs on restart
        topic_partitions=1,  # the tables' changelogs, like the telemetry topic they follow
        web_port=settings.liveness.monitor_port,
        web_bind="0.0.0.0",
        web_in_thread=False,
        # The app only reads telemetry; nothing it writes is on the path of an answer.
        processing_guarantee="at_least_once",
    )
    state = MonitorState([(s.name, s.source, s.sinks) for s in STAGES])
    telemetry = app.topic(settings.topic(TOPIC), key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")  # fmt: skip
    # Typed as faust's WindowWrapper (the interface type lacks relative_to).
    ten_s: Any = app.Table("counts-10s", default=int, partitions=1).tumbling(10.0, expires=EXPIRES, key_index=True)
    one_min: Any = app.Table("counts-1m", default=int, partitions=1).hopping(60.0, 10.0, expires=EXPIRES,
                                                                               key_index=True)  # fmt: skip

    @app.agent(telemetry)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            try:
                report = StageReport.decode(event.value)
            except DecodeError as exc:  # bad bytes never stop the monitor
                log.warning("%s[%s]@%s: %s", event.message.topic, event.message.partition, event.message.offset, exc)
                continue
            state.saw(report)
            for key, amount in counter_keys(report).items():
                ten_s[key] += amount
                one_min[key] += amount

    @app.timer(interval=lag_every_s, on_leader=True)
    async def read_lag() -> None:
        from pipeline.operations.lag import snapshot
        from pipeline.operations.status import compare

        pairs = [(s.name, s.source) for s in STAGES]
        loop = asyncio.get_running_loop()
        try:  # the admin client blocks: in a thread, so the agent keeps counting
            before = await loop.run_in_executor(None, lambda: snapshot(settings, pairs, ages=False))
            await asyncio.sleep(min(2.0, lag_every_s / 2))
            after = await loop.run_in_executor(None, lambda: snapshot(settings, pairs))
        except Exception as exc:  # a broker away for a moment: say so, try again next time
            log.warning("monitor: cannot read the stages' groups: %s", exc)
            return
        statuses = [compare(b, a) for b, a in zip(before, after, strict=True)]
        state.lag(statuses, time.monotonic())
        state.history.add(time.time(), state.statuses, windows()[0])  # one point on every chart
        for decision in state.advice.values():
            if decision.changes:
                log.info("advice: %s", decision.line())

    def windows() -> tuple[Window, Window]:
        # The last complete 10 s window, and the minute that ends now (the
        # oldest hopping window still open: it covers the last 50-60 s).
        # (faust reads a hopping window "relative to" a time as the one that
        # just started; .now() is the earliest one still open.)
        tumbling = ten_s.relative_to(time.time() - 10.0).items()
        return Window.of(tumbling), Window.of(one_min.items().now())

    @app.page("/")
    async def page(view: View, request: Request) -> Response:
        return view.html(PAGE)

    @app.page("/api/state")
    async def api_state(view: View, request: Request) -> Response:
        return view.json(state.to_json(*windows()))

    @app.page("/api/advice")
    async def api_advice(view: View, request: Request) -> Response:
        return view.json(state.advice_json())

    @app.page("/metrics")
    async def metrics(view: View, request: Request) -> Response:
        minute = windows()[1].to_json(60.0)
        return view.bytes(prometheus_text(state, minute), content_type="text/plain; version=0.0.4")

    app.monitor_state = state  # type: ignore[attr-defined]  # for tests and the command
    return app


def changelog_specs(app: faust.App) -> list[TopicSpec]:
    """The tables' changelog topics as faust would create them (its name, partitions, cleanup and retention)."""
    specs: list[TopicSpec] = []
    for table in app.tables.values():
        topic = table.changelog_topic
        flags = [flag for flag, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on]
        config = {"cleanup.policy": ",".join(flags)} if flags else {}
        if topic.retention:
            config["retention.ms"] = str(int(want_seconds(topic.retention) * 1000))
        name = topic.get_topic_name()
        specs.append(TopicSpec(name, name, table.partitions or 1, f"faust table {table.name}", config,
                               Path(__file__)))  # fmt: skip
    return specs


def run(settings: Settings, loglevel: str = "info") -> None:
    """Run the monitor until SIGINT/SIGTERM (faust's worker owns the event loop and the signals)."""
    from pipeline.operations.admin import ensure_topics

    app = build_app(settings)
    # faust creates its changelogs at start and may read their metadata before
    # the broker shows their partitions: the agent then crashes on its first
    # report (PartitionsMismatch, "0 partitions") and that report's counts are
    # lost. Created and settled here first, faust finds them as they must be.
    ensure_topics(settings, changelog_specs(app))
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
