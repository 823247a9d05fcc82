"""``pipeline monitor``: the faust-streaming monitor with its live page (pipeline/monitor/)."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from


def register(sub: Any) -> None:
    monitor = sub.add_parser(
        "monitor",
        help="the pipeline-wide monitor: windowed latency and errors, lag, scaling advice, a live page",
        description="A faust-streaming app in its own consumer group over the telemetry topic the stages write. "
        "Serves the live page at http://HOST:PORT/, its data at /api/state, scaling advice at /api/advice "
        "and Prometheus metrics at /metrics.",
    )
    monitor.add_argument("--port", type=int, help="web port (PIPELINE_MONITOR_PORT; default 6066)")
    monitor.add_argument("--loglevel", default="info", help="faust's log level (default info)")
    add_cluster_args(monitor)
    monitor.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    from pipeline.monitor.app import run
    from pipeline.monitor.auth import as_monitor

    # On a secured cluster the monitor is the monitor principal unless told otherwise (topics/acls/).
    settings = as_monitor(settings_from(args, monitor_port=args.port))
    print(f"pipeline monitor: http://127.0.0.1:{settings.liveness.monitor_port}/ (Ctrl-C stops)", flush=True)
    run(settings, args.loglevel)
    return 0
