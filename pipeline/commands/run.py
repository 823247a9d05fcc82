"""``pipeline run STAGE`` (one member) and ``pipeline up`` (the whole pipeline, locally)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.flow import STAGE_NAMES
from pipeline.messages import TASKS
from pipeline.settings import PROJECT_ROOT, Settings

log = logging.getLogger("pipeline.up")


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run one member of a stage's consumer group")
    run.add_argument("stage", choices=STAGE_NAMES)
    run.add_argument("--member", help="this member's id within the stage (PIPELINE_MEMBER)")
    add_cluster_args(run)
    run.set_defaults(func=cmd_run)

    up = sub.add_parser("up", help="run the whole pipeline locally: broker, topics, models, every stage")
    for stage in STAGE_NAMES:
        up.add_argument(f"--{stage}", type=int, default=1, metavar="N", help=f"{stage} members (default 1)")
    up.add_argument("--log-dir", default=str(PROJECT_ROOT / ".cache" / "logs"), help="one log file per member here")
    add_cluster_args(up)
    up.set_defaults(func=cmd_up)


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.flow import run_stage

    settings = settings_from(args, member=args.member)
    logging.getLogger().setLevel(settings.log_level)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run_stage(args.stage, settings, stop)
    return 0


def prepare(settings: Settings, say: Any = print) -> bool:
    """Everything the stages need before they start: broker, topics, exported models.

    Returns whether it started the local broker (so a caller can stop it again).
    """
    from pipeline.kafka import broker
    from pipeline.kafka.admin import apply_topics
    from pipeline.models.export import ensure_exported

    started = False
    if settings.bootstrap_servers == broker.address(settings):
        # Any broker answering there will do (ours, or one started elsewhere).
        status = broker.status(settings)
        if not status.up:
            status = broker.start(settings, say=say)
            started = not status.already_running
        say(f"Kafka {'started' if started else 'was already running'} at {status.address}")
    report = apply_topics(settings)
    say(f"topics: {report.summary()}")
    for task in TASKS:
        model = settings.model_for(task)
        if model:
            exported = ensure_exported(model, task, settings)
            say(f"model for {task}: {exported.path}")
    return started


def cmd_up(args: argparse.Namespace) -> int:
    from pipeline.supervisor import Supervisor

    settings = settings_from(args)
    prepare(settings)
    counts = {stage: getattr(args, stage) for stage in STAGE_NAMES}
    supervisor = Supervisor(counts, _child_env(args), PROJECT_ROOT / args.log_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    supervisor.start()
    print(f"pipeline up: {', '.join(f'{n}×{s}' for s, n in counts.items())}; logs in {args.log_dir}; Ctrl-C stops")
    try:
        wait_ready(settings, counts, stop, on_wait=supervisor.check)
        while not stop.wait(0.5):
            supervisor.check()
    finally:
        print("stopping the pipeline ...")
        supervisor.stop()
    return 0


def _child_env(args: argparse.Namespace) -> dict[str, str]:
    import os

    env = dict(os.environ)
    if args.bootstrap_servers:
        env["PIPELINE_BOOTSTRAP_SERVERS"] = args.bootstrap_servers
    if args.prefix is not None:
        env["PIPELINE_PREFIX"] = args.prefix
    return env


def wait_ready(
    settings: Settings,
    counts: dict[str, int],
    stop: threading.Event,
    timeout_s: float = 180.0,
    on_wait: Any = None,
) -> bool:
    """Wait until every stage's consumer group has its members; say so."""
    from pipeline.kafka.groups import group_members

    began = time.monotonic()
    while not stop.is_set() and time.monotonic() - began < timeout_s:
        members = group_members(settings, counts)
        if all(members[stage] >= n for stage, n in counts.items()):
            print(
                f"pipeline ready in {time.monotonic() - began:.1f} s: " + ", ".join(f"{s} {members[s]}" for s in counts)
            )
            return True
        if on_wait is not None:
            on_wait()
        stop.wait(1.0)
    return False
