"""The local multi-node cluster (``kafka_brokers`` > 1): one KRaft quorum of nodes that are all
broker and controller.

Every node is formatted with the same cluster id (kept in the cluster folder's
``cluster.properties``) and knows the static quorum (``controller.quorum.voters``,
:func:`pipeline.local.layout.nodes`). A node answers only once a majority of
the quorum runs, so :func:`start_cluster` spawns every node first and then
waits for each, and for all of them to be registered with the controller.
With ``kafka_secure`` every node is the secure broker of
:mod:`pipeline.local.secure`, sharing one CA, certificate and password set.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

from pipeline.errors import BrokerError, ConfigError
from pipeline.local.broker_config import LOG4J2_PROPERTIES, render_server_properties
from pipeline.local.layout import Node, Say, address, kafka_version, new_cluster_id, nodes, paths, read_properties
from pipeline.local.process import (
    check_port_free,
    clear_stale_pid,
    client_settings,
    java_command,
    lock,
    running_pid,
    spawn,
    wait_ready,
)
from pipeline.local.secure import scram_format_args, tls_files
from pipeline.local.tls import ensure_tls
from pipeline.operations.admin import check_broker
from pipeline.settings import Settings


def start_cluster(settings: Settings, timeout_s: float, say: Say) -> bool:
    """Start every node that is not running and wait until all are registered; whether all already ran."""
    every = nodes(settings)
    mode = "secure" if settings.broker.kafka_secure else "plaintext"
    with lock(paths(settings)):
        recorded = read_properties(paths(settings).cluster)
        if recorded and recorded.get("mode", "plaintext") != mode:
            raise ConfigError(
                f"the cluster in {paths(settings).root} is a {recorded.get('mode', 'plaintext')} one, not {mode}: "
                "give the secure cluster its own folder (--dir) and ports"
            )
        cluster_id = recorded.get("cluster.id") or new_cluster_id()
        # Written first: a node finds the cluster's id, CA and passwords through it (layout.cluster_root).
        paths(settings).cluster.write_text(f"cluster.id={cluster_id}\nbrokers={len(every)}\nmode={mode}\n")
        if settings.broker.kafka_secure and ensure_tls(tls_files(settings), settings.broker.kafka_host):
            say(f"made a CA and the brokers' certificate in {tls_files(settings).tls} (keytool)")
        started = {node.id: spawn_node(node, cluster_id, say) for node in every}
        # A node answers once the controller quorum (a majority of nodes) has formed: start all, then wait.
        for node in every:
            wait_ready(node.settings, paths(node.settings), started[node.id], timeout_s)
        wait_registered(settings, len(every), timeout_s)
    return all(process is None for process in started.values())


def start_one(node: Node, timeout_s: float, say: Say) -> None:
    """Start one node of a cluster (its folder formatted already) and wait until it answers."""
    p = paths(node.settings)
    with lock(p):
        process = spawn_node(node, cluster_id(node), say)
        wait_ready(node.settings, p, process, timeout_s)


def cluster_id(node: Node) -> str:
    """The id the cluster of ``node`` was formatted with (in the folder above the node's)."""
    found = read_properties(paths(node.settings).root.parent / "cluster.properties").get("cluster.id")
    if not found:
        raise ConfigError(f"no cluster id next to {paths(node.settings).root}: start the cluster with --brokers first")
    return found


def spawn_node(node: Node, cluster_id: str, say: Say) -> subprocess.Popen[bytes] | None:
    """Spawn ``node`` unless it runs (formatting its storage the first time); None when it did."""
    settings, p = node.settings, paths(node.settings)
    if running_pid(p) is not None:
        return None
    clear_stale_pid(p)
    for port in (settings.broker.kafka_port, settings.broker.kafka_controller_port):
        check_port_free(settings, port, p)
    version = kafka_version(p)
    if version is None:
        raise ConfigError(f"no Kafka broker jars in {p.libs}: run `make setup` to fetch them")
    p.server_properties.parent.mkdir(parents=True, exist_ok=True)
    p.server_properties.touch(mode=0o600)  # in secure mode it holds the stores' and broker's passwords
    p.server_properties.write_text(render_server_properties(settings, p.data, node_id=node.id, voters=node.voters))
    p.log4j2_properties.write_text(LOG4J2_PROPERTIES)
    if not (p.data / "meta.properties").exists():
        say(f"formatting node {node.id}'s storage in {p.data} (cluster id {cluster_id})")
        # Secure: every node's bootstrap metadata carries the broker's and admin's SCRAM credentials.
        scram = scram_format_args(settings) if settings.broker.kafka_secure else []
        command = java_command(
            settings, p, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(p.server_properties), *scram
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting {p.data} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    say(
        f"starting node {node.id}: Kafka {version} at {node.address} "
        f"(controller {node.controller}, heap {settings.broker.kafka_heap}); log: {p.log}"
    )
    return spawn(settings, p)


def wait_registered(settings: Settings, n: int, timeout_s: float) -> None:
    """Wait until the metadata lists all ``n`` brokers (each registered with the controller, unfenced)."""
    deadline = time.monotonic() + timeout_s
    found = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(BrokerError):
            found = check_broker(client_settings(settings), 3.0)
            if found >= n:
                return
        time.sleep(0.5)
    raise BrokerError(f"only {found} of {n} brokers registered at {address(settings)} within {timeout_s:.0f} s")
