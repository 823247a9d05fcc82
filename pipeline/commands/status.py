"""``pipeline status``: each stage's consumer group, read-only, from any cluster."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from pipeline.commands.common import add_cluster_args, settings_from


def register(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="each stage's members, lag (records and seconds), rates, time to drain and state",
        description="Read every stage's consumer group twice, --interval seconds apart, and print its members, "
        "lag in records and in seconds (age of the oldest waiting record), consume and arrival rates, time to "
        "drain and a state: ok, lagging, stalled or idle. Read-only; works against any cluster.",
    )
    status.add_argument("--interval", type=float, default=2.0, help="seconds between the two readings (default 2)")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--json", action="store_true", help="print JSON (one object per reading) for scripts")
    add_cluster_args(status)
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.flow import STAGES
    from pipeline.operations.lag import snapshot
    from pipeline.operations.status import compare, render

    settings = settings_from(args)
    stages = [(s.name, s.source) for s in STAGES]
    before = snapshot(settings, stages, ages=False)
    while True:
        time.sleep(max(args.interval, 0.2))
        after = snapshot(settings, stages)
        statuses = [compare(b, a) for b, a in zip(before, after, strict=True)]
        if args.json:
            print(orjson.dumps({"at": time.time(), "stages": [s.to_json() for s in statuses]}).decode())
        else:
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")  # clear the terminal: refresh in place
            print(render(statuses))
        sys.stdout.flush()
        if not args.watch:
            break
        before = after
    worst = {s.state for s in statuses}
    return 2 if "stalled" in worst else 0
