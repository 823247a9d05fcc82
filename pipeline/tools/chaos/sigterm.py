"""The sigterm scenario (issue 7 point 8): a member told to stop ends within 10 s, broker up or down, losing nothing.

Under a steady stream, each stage's member gets SIGTERM in turn with the
broker up, then, with the broker stopped, each one again. Every member must
be gone within ``STOP_WITHIN_S`` of its signal: it commits what it can in
``PIPELINE_SHUTDOWN_TIMEOUT_S`` and leaves, and with the broker away it gives
up on the commit rather than hang. The supervisor starts a new process after
each (as `pipeline up` or Kubernetes would); what the old one had not
committed is redone by it, so every request is still answered exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import TYPE_CHECKING

from pipeline.flow import STAGE_NAMES
from pipeline.tools.chaos.cluster import ChaosBroker, process_ids, running
from pipeline.tools.chaos.load import Load, Say
from pipeline.tools.chaos.tally import Row

if TYPE_CHECKING:
    from pipeline.tools.chaos.scenarios import Options

STOP_WITHIN_S = 10.0


def sigterm(broker: ChaosBroker, opts: Options, say: Say) -> Row:
    before, after = (5.0, 15.0) if opts.short else (10.0, 30.0)
    took: dict[str, list[float | None]] = {"up": [], "down": []}
    with running(broker.settings, opts.counts, "sigterm") as pipeline:
        load = Load(pipeline.settings, "sigterm", opts.timeout_ms, process_ids(broker, pipeline))
        load.start(opts.rate)
        time.sleep(before)
        for phase in ("up", "down"):
            if phase == "down":
                say("sigterm: stopping the broker")
                broker.stop()
            for stage in STAGE_NAMES:
                member = f"{stage}-0"
                process = pipeline.member(member).process
                assert process is not None
                began = time.monotonic()
                pipeline.signal(member, signal.SIGTERM)
                try:
                    process.wait(timeout=3 * STOP_WITHIN_S)
                    took[phase].append(time.monotonic() - began)
                except subprocess.TimeoutExpired:
                    took[phase].append(None)  # the supervisor kills it in the end
                pipeline.wait_restarted(member, process.pid)
        broker.start()
        back = time.time()
        say("sigterm: broker back")
        time.sleep(after)
        load.drain(say)
        row = load.row([back], pipeline.restarts(), pipeline.startup_restarts)
    for phase, times in took.items():
        shown = " / ".join("never" if t is None else f"{t:.1f}" for t in times)
        row.notes.append(f"SIGTERM -> exit with the broker {phase} ({', '.join(STAGE_NAMES)}): {shown} s")
        row.problems.extend(
            f"{stage}-0 with the broker {phase}: {'did not exit' if t is None else f'exited after {t:.1f} s'}"
            for stage, t in zip(STAGE_NAMES, times, strict=True)
            if t is None or t > STOP_WITHIN_S
        )
    return row
