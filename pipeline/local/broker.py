"""The project's own local Kafka broker: start, stop and status of one KRaft node or of a cluster.

One node is broker and controller, started from the jars `make setup` fetched;
``pipeline kafka start --brokers 3`` runs three such nodes as one cluster
(:mod:`pipeline.local.quorum`). Where its files live and which ports each node
takes: :mod:`pipeline.local.layout`; the JVM process itself:
:mod:`pipeline.local.process`. Imports run one way: broker -> quorum ->
process -> layout.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BrokerError, ConfigError
from pipeline.local.broker_config import LOG4J2_PROPERTIES, render_server_properties
from pipeline.local.layout import (
    BrokerPaths,
    Node,
    Say,
    address,
    kafka_version,
    new_cluster_id,
    nodes,
    paths,
    quiet,
    read_properties,
)
from pipeline.local.process import (
    alive,
    answers,
    check_port_free,
    clear_stale_pid,
    java_command,
    lock,
    running_pid,
    spawn,
    terminate,
    wait_ready,
)
from pipeline.local.quorum import start_cluster, start_one
from pipeline.local.secure import scram_format_args, tls_files
from pipeline.local.tls import ensure_tls
from pipeline.settings import Settings

__all__ = [
    "BrokerPaths",
    "BrokerStatus",
    "Node",
    "Say",
    "address",
    "alive",
    "java_command",
    "kafka_version",
    "new_cluster_id",
    "node_pid",
    "node_status",
    "nodes",
    "paths",
    "render_server_properties",
    "start",
    "start_node",
    "status",
    "stop",
]


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    address: str
    up: bool  # a Kafka broker answers metadata requests at address
    pid: int | None  # the broker this project started, if its process is alive
    log: Path
    version: str | None = None  # of the jars, when they are there
    already_running: bool = False  # start found it running
    stopped: bool = False  # stop ended it
    seconds: float = 0.0  # how long start or stop took


def status(settings: Settings) -> BrokerStatus:
    """The broker, or the cluster as a whole: up when every node answers (pid and log: node 1's)."""
    if settings.broker.kafka_brokers > 1:
        each = node_status(settings)
        return dataclasses.replace(each[0], address=address(settings), up=all(s.up for s in each))
    p = paths(settings)
    return BrokerStatus(
        address=address(settings), up=answers(settings), pid=running_pid(p), log=p.log, version=kafka_version(p)
    )


def node_status(settings: Settings) -> list[BrokerStatus]:
    """Each node's own status (one entry for a single broker)."""
    if settings.broker.kafka_brokers == 1:
        return [status(settings)]
    return [status(node.settings) for node in nodes(settings)]


def node_pid(node: Node) -> int | None:
    """The live process of ``node`` that this project started, if any."""
    return running_pid(paths(node.settings))


def start(settings: Settings, *, timeout_s: float = 120.0, say: Say = quiet) -> BrokerStatus:
    """Start the broker (every node of the cluster) and return once it answers; harmless when it runs."""
    began = time.monotonic()
    if settings.broker.kafka_brokers > 1:
        already = start_cluster(settings, timeout_s, say)
        return dataclasses.replace(status(settings), already_running=already, seconds=time.monotonic() - began)
    p = paths(settings)
    with lock(p):
        pid = running_pid(p)
        if pid is not None:
            wait_ready(settings, p, None, timeout_s)
            return dataclasses.replace(status(settings), already_running=True)
        clear_stale_pid(p)
        for port in (settings.broker.kafka_port, settings.broker.kafka_controller_port):
            check_port_free(settings, port, p)
        version = kafka_version(p)
        if version is None:
            raise ConfigError(f"no Kafka broker jars in {p.libs}: run `make setup` to fetch them")
        if settings.broker.kafka_secure and ensure_tls(tls_files(settings), settings.broker.kafka_host):
            say(f"made a CA and the broker's certificate in {tls_files(settings).tls} (keytool)")
        _write_configs(settings, p)
        _format_once(settings, p, say)
        local = settings.broker
        say(
            f"starting Kafka {version} at {address(settings)} "
            f"(controller {local.kafka_host}:{local.kafka_controller_port}, heap {local.kafka_heap})"
        )
        say(f"log: {p.log}")
        process = spawn(settings, p)
        wait_ready(settings, p, process, timeout_s)
    return dataclasses.replace(status(settings), seconds=time.monotonic() - began)


def start_node(node: Node, *, timeout_s: float = 120.0, say: Say = quiet) -> BrokerStatus:
    """Start one node of a cluster (its folder formatted already) and wait until it answers."""
    began = time.monotonic()
    start_one(node, timeout_s, say)
    return dataclasses.replace(status(node.settings), seconds=time.monotonic() - began)


def stop(settings: Settings, *, timeout_s: float = 60.0) -> BrokerStatus:
    """Stop the broker this project started (SIGTERM, then wait); harmless when none runs.

    A cluster's nodes get SIGTERM together (each shuts down cleanly while the
    quorum is still there); the status returned is node 1's, ``stopped`` when
    any node was stopped.
    """
    if settings.broker.kafka_brokers > 1:
        began = time.monotonic()
        every = nodes(settings)
        pids = {node.id: node_pid(node) for node in every}
        for pid in pids.values():
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        done = [stop(node.settings, timeout_s=timeout_s) for node in every]
        first = next((d for d in done if d.stopped), done[0])
        return dataclasses.replace(
            first, address=address(settings), stopped=any(d.stopped for d in done), seconds=time.monotonic() - began
        )
    p = paths(settings)
    began = time.monotonic()
    pid = running_pid(p)
    if pid is None:
        clear_stale_pid(p)
        return status(settings)
    terminate(pid, p, timeout_s)
    return dataclasses.replace(status(settings), pid=pid, stopped=True, seconds=time.monotonic() - began)


def _write_configs(settings: Settings, p: BrokerPaths) -> None:
    p.server_properties.parent.mkdir(parents=True, exist_ok=True)
    p.server_properties.touch(mode=0o600)  # in secure mode it holds the stores' and broker's passwords
    p.server_properties.write_text(render_server_properties(settings, p.data))
    p.log4j2_properties.write_text(LOG4J2_PROPERTIES)


def _format_once(settings: Settings, p: BrokerPaths, say: Say) -> None:
    """Format the storage the first time; refuse a controller address other than the formatted one."""
    controller = f"{settings.broker.kafka_host}:{settings.broker.kafka_controller_port}"
    mode = "secure" if settings.broker.kafka_secure else "plaintext"
    if (p.data / "meta.properties").exists():
        recorded = read_properties(p.cluster)
        if recorded.get("controller", controller) != controller:
            raise ConfigError(
                f"the storage in {p.data} was formatted for controller {recorded['controller']}, not {controller}: "
                f"use the same host and controller port, or delete {p.data} to start an empty broker"
            )
        if recorded.get("mode", "plaintext") != mode:
            raise ConfigError(
                f"the storage in {p.data} belongs to a {recorded.get('mode', 'plaintext')} broker, not a {mode} one: "
                "give the secure broker its own folder (PIPELINE_KAFKA_DIR, e.g. .cache/kafka-secure) and ports"
            )
        return
    cluster_id = new_cluster_id()
    say(f"formatting new KRaft storage in {p.data} (cluster id {cluster_id})")
    command = java_command(
        settings,
        p,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(p.server_properties),
        "--standalone",
        *(scram_format_args(settings) if settings.broker.kafka_secure else []),
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"formatting {p.data} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    p.cluster.write_text(f"cluster.id={cluster_id}\ncontroller={controller}\nmode={mode}\n")
