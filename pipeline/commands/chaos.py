"""``pipeline chaos SCENARIO``: break a local pipeline from outside and print one table.

The suite runs its own broker (127.0.0.1:9492, controller 9493, data in
.cache/kafka-chaos), never the one at PIPELINE_BOOTSTRAP_SERVERS, because it
stops and restarts it. The cluster scenarios (leader-kill, rolling-restart,
controller-kill, pause-broker; ``cluster``: all four) run on a three-broker
cluster of their own (127.0.0.1:19100, 19102, 19104, data in
/tmp/cluster-kafka; --cluster-port, --cluster-dir). Member logs:
.cache/chaos-logs/<prefix>/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.settings import Settings

ORDER = (
    "kill-each",
    "broker-restart",
    "broker-outage",
    "stop-infer",
    "sigterm",
    "overload",
    "soak",
    "fuzz",
    "rebalance-classic",
    "rebalance-consumer",
)
# On the three-broker cluster (pipeline.tools.chaos.cluster_faults), against one pipeline in turn.
CLUSTER = ("leader-kill", "rolling-restart", "controller-kill", "pause-broker")
# Names that run several scenarios: `pipeline chaos rebalance` is both group protocols side by side.
GROUPS = {"all": ORDER, "rebalance": ("rebalance-classic", "rebalance-consumer"), "cluster": CLUSTER}


def register(sub: Any) -> None:
    chaos = sub.add_parser("chaos", help="run chaos scenarios against a broker of its own; print one table")
    chaos.add_argument(
        "scenario",
        choices=(*ORDER, *CLUSTER, *GROUPS),
        help="what to break ('all': each single-broker scenario in turn; 'rebalance': scaling under load per "
        "group protocol; 'cluster': each three-broker scenario in turn)",
    )
    chaos.add_argument("--short", action="store_true", help="a few hundred requests, under a minute of load each")
    chaos.add_argument(
        "--rate", type=float, default=10.0, help="steady requests per second (10; full kill-each: half the capacity)"
    )
    chaos.add_argument(
        "--capacity", type=float, help="requests/s the pipeline answers (measured with a 100/s stream when not given)"
    )
    chaos.add_argument("--timeout-ms", type=int, default=30_000, help="each request's deadline (30000)")
    chaos.add_argument("--seed", type=int, default=7, help="the fuzz corpus seed (7)")
    chaos.add_argument("--kafka-port", type=int, default=9492, help="the suite's own broker port (9492)")
    chaos.add_argument("--controller-port", type=int, default=9493, help="its controller port (9493)")
    chaos.add_argument("--kafka-dir", type=Path, help="its data folder (.cache/kafka-chaos)")
    chaos.add_argument(
        "--cluster-port", type=int, default=19100, help="the cluster scenarios' node 1 port (19100; node i: +2(i-1))"
    )
    chaos.add_argument(
        "--cluster-dir", type=Path, default=Path("/tmp/cluster-kafka"), help="its folder (/tmp/cluster-kafka)"
    )
    chaos.set_defaults(func=cmd_chaos)


def cmd_chaos(args: argparse.Namespace) -> int:
    from pipeline.tools.chaos.cluster import CHAOS_DIR, ChaosBroker, chaos_settings
    from pipeline.tools.chaos.rebalance import SCENARIOS as REBALANCE
    from pipeline.tools.chaos.scenarios import SCENARIOS, Options
    from pipeline.tools.chaos.tally import Row, render

    settings = chaos_settings(
        Settings.from_env(),
        port=args.kafka_port,
        controller_port=args.controller_port,
        kafka_dir=args.kafka_dir or CHAOS_DIR,
    )
    names = GROUPS.get(args.scenario, (args.scenario,))
    if set(names) <= set(CLUSTER):
        return _cmd_cluster(args, names)
    scenarios = {**SCENARIOS, **REBALANCE}
    opts = Options(short=args.short, rate=args.rate, capacity=args.capacity, timeout_ms=args.timeout_ms, seed=args.seed)
    rows: list[Row] = []

    def say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    with ChaosBroker(settings, say) as broker:
        for name in names:
            say(f"{name}: starting{' (short)' if opts.short else ''}")
            began = time.monotonic()
            try:
                row = scenarios[name](broker, opts, say)
            except PipelineError as exc:  # one scenario that cannot run does not end the others
                row = Row(name, problems=[f"could not run: {exc}"])
            rows.append(row)
            say(f"{name}: done in {time.monotonic() - began:.0f} s")
            print(render([row]), file=sys.stderr, flush=True)
    print(render(rows))
    failed = [r for r in rows if r.lost or r.duplicated or r.problems]
    return 1 if failed else 0


def _cmd_cluster(args: argparse.Namespace, names: tuple[str, ...]) -> int:
    from pipeline.tools.chaos.brokers import ChaosCluster, cluster_settings
    from pipeline.tools.chaos.cluster_faults import ClusterOptions, run_cluster
    from pipeline.tools.chaos.tally import render

    if args.cluster_port <= 0 or args.cluster_port + 5 > 65535:
        raise SystemExit(f"--cluster-port {args.cluster_port}: the cluster takes that port and the next five")
    settings = cluster_settings(Settings.from_env(), port=args.cluster_port, kafka_dir=args.cluster_dir)
    opts = ClusterOptions(short=args.short, rate=args.rate, timeout_ms=args.timeout_ms)

    def say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    with ChaosCluster(settings, say) as cluster:
        rows = run_cluster(cluster, names, opts, say)
    print(render(rows))
    failed = [r for r in rows if r.lost or r.duplicated or r.problems]
    return 1 if failed else 0
