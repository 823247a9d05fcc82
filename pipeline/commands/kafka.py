"""``pipeline kafka start|status|stop``: the project's local single-node Kafka broker."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from pipeline.local import broker
from pipeline.local.secure import client_env
from pipeline.settings import Settings


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "kafka", help="start, check or stop the local Kafka broker (KRaft, one node or --brokers 3)"
    )
    commands = group.add_subparsers(dest="kafka_command", required=True, metavar="ACTION")

    start = commands.add_parser("start", help="start the broker (formats its storage the first time); idempotent")
    _add_broker_flags(start)
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait until it answers (120)")
    start.set_defaults(func=_start)

    status = commands.add_parser("status", help="say whether the broker is up (exit 0) or down (exit 1)")
    _add_broker_flags(status)
    status.set_defaults(func=_status)

    secrets = commands.add_parser(
        "secrets", help="make the CA, broker certificate and passwords for docker-compose.secure.yml (once)"
    )
    secrets.add_argument("--dir", type=Path, default=Path(".cache/compose-secure"), help="(.cache/compose-secure)")
    secrets.add_argument("--host", default="kafka", help="the broker's host name in its certificate (kafka)")
    secrets.set_defaults(func=_secrets)

    stop = commands.add_parser("stop", help="stop the broker cleanly (SIGTERM, then wait)")
    _add_broker_flags(stop)
    stop.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to exit (60)")
    stop.set_defaults(func=_stop)


def _add_broker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (PIPELINE_KAFKA_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="client port (PIPELINE_KAFKA_PORT, 9092)")
    parser.add_argument(
        "--controller-port", type=int, help="KRaft controller port (PIPELINE_KAFKA_CONTROLLER_PORT, 9093)"
    )
    parser.add_argument("--dir", type=Path, help="data, config and log folder (PIPELINE_KAFKA_DIR, .cache/kafka)")
    parser.add_argument("--heap", help="JVM heap (PIPELINE_KAFKA_HEAP, 1g; each of several brokers: --cluster-heap)")
    parser.add_argument(
        "--brokers",
        type=int,
        help="nodes, each broker and controller (PIPELINE_KAFKA_BROKERS, 1); 3: replication 3, min ISR 2, "
        "node i on port + 2(i-1) with its data in DIR/node-i",
    )
    parser.add_argument(
        "--cluster-heap", help="each node's JVM heap with --brokers > 1 (PIPELINE_KAFKA_CLUSTER_HEAP, 384m)"
    )
    parser.add_argument(
        "--secure",
        action="store_const",
        const=True,
        help="SASL_SSL (SCRAM-SHA-512), TLS, ACLs enforced (PIPELINE_KAFKA_SECURE); give it its own --dir and ports",
    )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        kafka_host=args.host,
        kafka_port=args.port,
        kafka_controller_port=args.controller_port,
        kafka_dir=args.dir,
        kafka_heap=args.heap,
        kafka_secure=args.secure,
        kafka_brokers=args.brokers,
        kafka_cluster_heap=args.cluster_heap,
    )


def _say(line: str) -> None:
    print(f"kafka: {line}", flush=True)


def _start(args: argparse.Namespace) -> int:
    settings = _settings(args)
    state = broker.start(settings, timeout_s=args.timeout, say=_say)
    if state.already_running:
        _say(f"already running at {state.address} (pid {state.pid}); log: {state.log}")
    else:
        _say(f"up at {state.address} after {state.seconds:.1f} s (pid {state.pid}); stop with `pipeline kafka stop`")
    if settings.broker.kafka_secure:
        _say("secure: SASL_SSL with SCRAM-SHA-512, ACLs enforced; as its admin, in a shell:")
        for key, value in client_env(settings).items():
            print(f"export {key}={shlex.quote(value)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    if _settings(args).broker.kafka_brokers > 1:
        return _cluster_status(_settings(args))
    state = broker.status(_settings(args))
    if state.up and state.pid is not None:
        _say(f"up at {state.address} (pid {state.pid}, Kafka {state.version}); log: {state.log}")
    elif state.up:
        _say(f"up at {state.address} (not started by `pipeline kafka start` from {broker.paths(_settings(args)).root})")
    elif state.pid is not None:
        _say(
            f"not answering at {state.address}, but its process runs (pid {state.pid}): starting or stuck? "
            f"log: {state.log}"
        )
    else:
        _say(f"down (nothing answers at {state.address})")
    return 0 if state.up else 1


def _cluster_status(settings: Settings) -> int:
    """Each node up or down, with its process and the partitions it leads; exit 0 when all are up."""
    from pipeline.errors import BrokerError
    from pipeline.operations.admin import leadership

    each = broker.node_status(settings)
    try:
        lead = leadership(settings.replace(bootstrap_servers=broker.address(settings)))
    except BrokerError as exc:
        lead = None
        _say(f"no metadata from any node: {exc}")
    for node, state in zip(broker.nodes(settings), each, strict=True):
        word = "up" if state.up else "down"
        pid = f"pid {state.pid}" if state.pid is not None else "no process of ours"
        registered = "" if lead is None or node.id in lead.brokers else ", not registered"
        led = "?" if lead is None else str(lead.led.get(node.id, 0))
        _say(
            f"broker {node.id} {word} at {state.address} ({pid}{registered}), leads {led} partitions; log: {state.log}"
        )
    if lead is not None:
        _say(f"{lead.leaderless} partitions without a leader, {lead.under_replicated} under-replicated")
    return 0 if all(state.up for state in each) else 1


def _stop(args: argparse.Namespace) -> int:
    settings = _settings(args)
    state = broker.stop(settings, timeout_s=args.timeout)
    if state.stopped:
        _say(f"stopped (pid {state.pid}) in {state.seconds:.1f} s; log: {state.log}")
    elif state.up:
        _say(
            f"not stopping the broker at {state.address}: this project did not start it (no live pid in "
            f"{broker.paths(settings).pid_file})"
        )
    else:
        _say("not running")
    return 0


def _secrets(args: argparse.Namespace) -> int:
    from pipeline.local.secure import deploy_secrets
    from pipeline.operations.acls import roles

    made = deploy_secrets(args.dir, args.host, list(roles(Settings.from_env())))
    _say(f"{len(made)} files in {args.dir} (kept if there): CA and stores in tls/, a password per user in secrets/")
    return 0
