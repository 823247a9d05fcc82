"""One member of one stage: build its logic, join its group, run the loop until told to stop.

This is where the map (:mod:`pipeline.flow`), the stage's code
(:mod:`pipeline.stages`) and the runtime meet; ``pipeline run STAGE`` calls
:func:`run_stage`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pipeline import stages
from pipeline.flow import stage
from pipeline.runtime.metrics import serve
from pipeline.runtime.runner import StageRunner
from pipeline.settings import Settings
from pipeline.stages.filter.queue_wait import Reading


def run_stage(name: str, settings: Settings, stop: threading.Event) -> None:
    """Run one member of stage ``name`` until ``stop`` is set.

    The stage's logic (models, tokenizers) is built before the member joins
    its group: a member that is in the group but still loading would hold
    partitions while answering nothing.
    """
    spec = stage(name)
    logic = stages.build(spec.name, settings)
    watcher = logic.watcher
    if watcher is not None:  # filter's shedding model: it reads the queues downstream through a probe opened here
        from pipeline.runtime.queue_age import QueueAges

        def open_probe() -> tuple[Callable[[], Reading], Callable[[], None]]:
            ages = QueueAges(settings, list(watcher.downstream))
            return ages.read, ages.close

        watcher.watch(open_probe)
    serve(settings.liveness.metrics_port)
    runner = StageRunner(settings, spec.name, spec.source, logic, spec.batching(settings), changelog=spec.changelog)
    telemetry = None
    if settings.liveness.telemetry_interval_ms > 0:  # reports for the monitor (pipeline/telemetry.py)
        from pipeline.runtime.telemetry import TelemetryEmitter

        telemetry = TelemetryEmitter(settings, spec.name, runner.client_id)
        runner.metrics.attach(telemetry)
    follower = None
    if spec.follows:
        from pipeline.runtime.follow import Follower

        follower = Follower(settings, spec.follows, logic.hooks.followed)
        follower.start()
    try:
        runner.run(stop)
    finally:
        if follower is not None:
            follower.close()
        if telemetry is not None:
            telemetry.close()
