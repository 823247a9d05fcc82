"""``pipeline health``: is a member alive? For probes (Kubernetes exec, docker healthcheck) and people."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    health = sub.add_parser(
        "health",
        help="exit 0 if a member's health file is fresh (for liveness probes)",
        description="Read the health file a member writes about once a second (PIPELINE_HEALTH_FILE) and exit 0 "
        "if its loop turned within --max-age seconds, 1 otherwise. Prints what it found.",
    )
    health.add_argument("file", nargs="?", help="the health file (default: PIPELINE_HEALTH_FILE)")
    health.add_argument("--max-age", type=float, default=30.0, help="seconds since the loop last turned (default 30)")
    health.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace) -> int:
    from pipeline.runtime.liveness import read_health
    from pipeline.settings import Settings

    path = Path(args.file or Settings.from_env().liveness.health_file or "")
    if not str(path) or str(path) == ".":
        print("no health file: pass one or set PIPELINE_HEALTH_FILE")
        return 1
    health = read_health(path)
    if health is None:
        print(f"{path}: no health yet (the member has not started its loop)")
        return 1
    age = time.time() - float(health.get("at", 0))
    state = health.get("state", "?")
    print(f"{health.get('member', '?')}: {state}, loop turned {age:.1f} s ago, {health.get('processed', 0)} records")
    return 0 if age <= args.max_age and state != "stopping" else 1
