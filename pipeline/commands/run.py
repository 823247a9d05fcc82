"""``pipeline run STAGE`` (one member) and ``pipeline up`` (the whole pipeline, locally)."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import threading
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.flow import STAGE_NAMES
from pipeline.settings import PROJECT_ROOT

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
    up.add_argument(
        "--autoscale",
        action="store_true",
        help="size every stage from its arrival rate, lag and per-member rate (decisions in the log)",
    )
    up.add_argument(
        "--max",
        default="",
        metavar="STAGE=N,...",
        help="--autoscale: at most N members for STAGE (always at most its topic's partitions)",
    )
    up.add_argument(
        "--target-drain",
        type=float,
        default=60.0,
        metavar="S",
        help="--autoscale: how fast a backlog should be gone, in seconds (default 60)",
    )
    up.add_argument(
        "--advice",
        metavar="URL",
        help="--autoscale: follow the monitor's advice (e.g. http://127.0.0.1:6066/api/advice)",
    )
    up.add_argument(
        "--autoscale-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="--autoscale: seconds between readings of the groups (default 10)",
    )
    add_cluster_args(up)
    up.set_defaults(func=cmd_up)


def cmd_run(args: argparse.Namespace) -> int:
    # Defensive, before the stage's imports: should a library import jax here after
    # all, it takes GPU memory as it needs it instead of 75 % of the device
    # at its first use (issue 19; bm25s is kept off jax in tasks/retrieval.py).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # A crash in native code (librdkafka, onnxruntime) prints every thread's Python stack to the
    # member's log before the process dies, instead of nothing but "exited with -11".
    faulthandler.enable()
    from pipeline.runtime.member import run_stage

    settings = settings_from(args, member=args.member)
    if settings.sasl and not settings.security.sasl_username:
        # On a secured cluster a member is its stage's principal unless told otherwise.
        settings = settings.replace(sasl_username=settings.principal(args.stage))
    logging.getLogger().setLevel(settings.liveness.log_level)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # SIGUSR1: retired (`pipeline scale` down): stop, and hand the partitions to the others at once
    # instead of leaving them to a successor that is not coming (pipeline.runtime.runner._leave_group).
    leave = threading.Event()

    def retire(*_: object) -> None:
        leave.set()
        stop.set()

    signal.signal(signal.SIGUSR1, retire)
    from pipeline.runtime.liveness import exit_after_signal

    exit_after_signal(f"{args.stage} member {settings.runtime.member}", settings.liveness.shutdown_timeout_s)
    run_stage(args.stage, settings, stop, leave)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from pipeline.local.cluster import prepare, wait_ready
    from pipeline.local.supervisor import Supervisor

    settings = settings_from(args)
    prepare(settings)
    counts = {stage: getattr(args, stage) for stage in STAGE_NAMES}
    # On the local secure broker prepare() made every stage's user: members log in as their stage, not as admin.
    members = settings.replace(sasl_username="") if settings.broker.kafka_secure else settings
    supervisor = Supervisor(counts, members, PROJECT_ROOT / args.log_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    supervisor.start()
    print(f"pipeline up: {', '.join(f'{n}×{s}' for s, n in counts.items())}; logs in {args.log_dir}; Ctrl-C stops")
    # `pipeline scale` and --autoscale (pipeline/local/control.py, autoscale.py).
    from pipeline.local.scaling_loop import ScalingLoop

    scaling = ScalingLoop.start(settings, supervisor, args, stop)
    try:
        wait_ready(settings, dict(counts), stop, on_wait=supervisor.check, turning=supervisor.turning)
        while not stop.wait(0.5):
            supervisor.check()
            scaling.poll()
    finally:
        print("stopping the pipeline ...")
        supervisor.stop()
    return 0
