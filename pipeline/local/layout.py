"""Where the local broker lives: its folder, its files, and each node's ports and folder in a cluster.

Layout under ``settings.broker.kafka_dir`` (``.cache/kafka`` by default)::

    libs/                     broker jars (make setup; when absent, the project's .cache/kafka/libs)
    config/server.properties  rendered from Settings at every start
    config/log4j2.properties
    data/                     the log dirs: topics and the KRaft metadata log
    logs/broker.log           everything the broker prints
    broker.pid                the running broker's process id
    cluster.properties        cluster id and controller address the storage was formatted with

With ``kafka_brokers`` > 1 (``pipeline kafka start --brokers 3``) the folder holds
one such layout per node, ``node-1/`` ... ``node-N/``, plus ``cluster.properties``
with the id they were all formatted with; node i listens on ``kafka_port + 2(i-1)``
and its controller on ``kafka_controller_port + 2(i-1)`` (:func:`nodes`).
Clients bootstrap from every node (:func:`address`).

Pure paths and arithmetic: nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import re
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.settings import PROJECT_ROOT, Settings

PROJECT_LIBS = PROJECT_ROOT / ".cache" / "kafka" / "libs"
"""Where `make setup` puts the jars (ops/kafka/pom.xml pins the version)."""

Say = Callable[[str], None]

NODE_FOLDER = re.compile(r"node-[0-9]+")
"""A cluster node's folder inside the cluster's (:func:`nodes`)."""


def quiet(_: str) -> None:
    """A ``Say`` that says nothing."""


@dataclass(frozen=True, slots=True)
class BrokerPaths:
    root: Path

    @property
    def libs(self) -> Path:
        local = self.root / "libs"
        return local if local.is_dir() else PROJECT_LIBS

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def server_properties(self) -> Path:
        return self.root / "config" / "server.properties"

    @property
    def log4j2_properties(self) -> Path:
        return self.root / "config" / "log4j2.properties"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def cluster(self) -> Path:
        return self.root / "cluster.properties"


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the local cluster: its id and Settings with its own ports and folder."""

    id: int
    settings: Settings  # kafka_brokers=1: this node alone
    voters: str = ""  # the static controller quorum when in a cluster

    @property
    def address(self) -> str:
        return address(self.settings)

    @property
    def controller(self) -> str:
        return f"{self.settings.broker.kafka_host}:{self.settings.broker.kafka_controller_port}"


def nodes(settings: Settings) -> list[Node]:
    """The nodes ``settings`` describe: one, or ``kafka_brokers`` with ports and folders of their own."""
    local = settings.broker
    n = local.kafka_brokers
    if n == 1:
        return [Node(1, settings)]
    if n < 3:
        raise ConfigError(f"kafka_brokers={n}: run 1 node, or 3 or more (replication 3, two in sync)")
    ports = [local.kafka_port + 2 * i for i in range(n)] + [local.kafka_controller_port + 2 * i for i in range(n)]
    if len(set(ports)) != len(ports):
        raise ConfigError(
            f"{n} brokers from port {local.kafka_port} and controller port {local.kafka_controller_port} "
            f"overlap ({sorted(ports)}): node i takes port + 2(i-1) and controller port + 2(i-1); "
            "use controller port = port + 1"
        )
    host = local.kafka_host
    voters = ",".join(f"{i + 1}@{host}:{local.kafka_controller_port + 2 * i}" for i in range(n))
    return [
        Node(
            i + 1,
            settings.replace(
                kafka_brokers=1,
                kafka_port=local.kafka_port + 2 * i,
                kafka_controller_port=local.kafka_controller_port + 2 * i,
                kafka_dir=local.kafka_dir / f"node-{i + 1}",
                kafka_heap=local.kafka_cluster_heap,
            ),
            voters,
        )
        for i in range(n)
    ]


def paths(settings: Settings) -> BrokerPaths:
    """The folder of the broker, or of the whole cluster (its nodes' folders are inside)."""
    return BrokerPaths(settings.broker.kafka_dir.resolve())


def address(settings: Settings) -> str:
    """The bootstrap servers of the local broker: every node's client address, comma-separated."""
    if settings.broker.kafka_brokers > 1:
        return ",".join(node.address for node in nodes(settings))
    return f"{settings.broker.kafka_host}:{settings.broker.kafka_port}"


def cluster_root(settings: Settings) -> Path:
    """The folder shared by the whole local broker: a cluster node's parent, else its own folder.

    A node's Settings (from :func:`nodes`) are a one-node broker in ``DIR/node-i``;
    what the cluster shares (its id, and in secure mode the CA, the certificate
    and the passwords) lives in ``DIR``, which holds ``cluster.properties`` with
    the node count.
    """
    root = paths(settings).root
    in_cluster = settings.broker.kafka_brokers == 1 and NODE_FOLDER.fullmatch(root.name) is not None
    if in_cluster and "brokers" in read_properties(root.parent / "cluster.properties"):
        return root.parent
    return root


def kafka_version(p: BrokerPaths) -> str | None:
    """The version of the broker jars (from kafka_2.13-<version>.jar), None when absent."""
    jars = sorted(p.libs.glob("kafka_2.13-*.jar"))
    return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else None


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding (as StorageTool random-uuid)."""
    while True:
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka rejects ids that look like a flag
            return cluster_id


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of ``path`` ({} when it is not there)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
