"""The local broker's configuration files, rendered from Settings (see pipeline.local.broker)."""

from __future__ import annotations

from pathlib import Path

from pipeline.local import secure
from pipeline.settings import Settings

BROKER_MESSAGE_MAX_BYTES = 4 * 1024 * 1024
"""The broker-wide record size limit; each declared topic sets its own below it."""

CLUSTER_REPLICATION = 3
"""Replicas of every topic on a local cluster (kafka_brokers > 1): all three nodes."""

CLUSTER_MIN_ISR = 2
"""In-sync replicas a write (acks=all, every transaction) needs there: one node may be down."""

__all__ = [
    "BROKER_MESSAGE_MAX_BYTES",
    "CLUSTER_MIN_ISR",
    "CLUSTER_REPLICATION",
    "LOG4J2_PROPERTIES",
    "render_server_properties",
]


def render_server_properties(settings: Settings, data_dir: Path, *, node_id: int = 1, voters: str = "") -> str:
    """The broker's server.properties: a node that is broker and controller.

    ``settings`` carry this node's own ports. Alone (``voters`` empty) it is the
    whole cluster; in a cluster ``voters`` is the static controller quorum
    (``1@host:port,2@host:port,...``) and replication is 3 with 2 in sync.
    """
    host, port, cport = settings.broker.kafka_host, settings.broker.kafka_port, settings.broker.kafka_controller_port
    quorum = f"controller.quorum.voters={voters}" if voters else f"controller.quorum.bootstrap.servers={host}:{cport}"
    return "\n".join(
        [
            "# Written by `pipeline kafka start` from Settings (PIPELINE_KAFKA_*); edits are overwritten.",
            "process.roles=broker,controller",
            f"node.id={node_id}",
            quorum,
            *(
                secure.listener_lines(settings)
                if settings.broker.kafka_secure
                else [
                    f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
                    f"advertised.listeners=PLAINTEXT://{host}:{port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                ]
            ),
            f"log.dirs={data_dir}",
            *(_cluster_lines() if voters else _single_lines()),
            "# Tests and demos start their consumers at once: no 3 s wait for more group members.",
            "group.initial.rebalance.delay.ms=0",
            "# Groups on KIP-848's consumer protocol (PIPELINE_GROUP_PROTOCOL=consumer) take their session",
            "# and heartbeat from the broker: 10 s and 0.5 s, as the classic groups ask for themselves",
            "# (the broker's 45 s / 5 s defaults would leave a dead member's partitions idle 45 s).",
            "group.consumer.min.session.timeout.ms=10000",
            "group.consumer.session.timeout.ms=10000",
            "group.consumer.min.heartbeat.interval.ms=500",
            "group.consumer.heartbeat.interval.ms=500",
            "# Every topic, merge's state included, comes from topics/ (pipeline topics apply),",
            "# never from a producer's typo.",
            "auto.create.topics.enable=false",
            "# Above every declared topic's max.message.bytes (each topic sets its own).",
            f"message.max.bytes={BROKER_MESSAGE_MAX_BYTES}",
            "",
        ]
    )


def _single_lines() -> list[str]:
    return [
        "# One node: every internal topic has one replica, and one in-sync replica is enough.",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
    ]


def _cluster_lines() -> list[str]:
    """Three copies of everything, two in sync before a write counts, and faults noticed in about 2 s.

    docs/reliability.md ("Three brokers") says why each value: the chaos scenarios
    (pipeline chaos leader-kill, rolling-restart, controller-kill, pause-broker)
    need leadership to move well inside their 3 s p99.
    """
    return [
        "# Three nodes: every topic (declared ones say replication -1: this default) and every",
        "# internal topic has 3 replicas; a write (acks=all) needs 2 of them, so one node may be down.",
        f"default.replication.factor={CLUSTER_REPLICATION}",
        f"min.insync.replicas={CLUSTER_MIN_ISR}",
        f"offsets.topic.replication.factor={CLUSTER_REPLICATION}",
        f"transaction.state.log.replication.factor={CLUSTER_REPLICATION}",
        f"transaction.state.log.min.isr={CLUSTER_MIN_ISR}",
        f"share.coordinator.state.topic.replication.factor={CLUSTER_REPLICATION}",
        f"share.coordinator.state.topic.min.isr={CLUSTER_MIN_ISR}",
        "# A broker that stops heartbeating is fenced after 3 s (default 9 s), and its partitions'",
        "# leadership moves to an in-sync follower then; heartbeats every 0.5 s (default 2 s).",
        "broker.session.timeout.ms=3000",
        "broker.heartbeat.interval.ms=500",
        "# A dead or paused follower leaves the ISR when the controller fences it (3 s above). A live",
        "# follower that has not caught up for 10 s leaves it too (default 30 s); at 3 s, followers on",
        "# a busy machine dropped out while another node was down, leaving an ISR of 1 < min ISR 2 and",
        "# acks=all writes (every transaction) refused until they caught up (issue 20).",
        "replica.lag.time.max.ms=10000",
        "# A dead active controller is replaced after 1 s without its fetches (default 2 s).",
        "controller.quorum.fetch.timeout.ms=1000",
        "controller.quorum.election.timeout.ms=500",
        "# Leadership goes back to the preferred replica after a restart (checked every 30 s).",
        "leader.imbalance.check.interval.seconds=30",
    ]


LOG4J2_PROPERTIES = """\
# Written by `pipeline kafka start`. The broker's stdout is the log file.
status = warn
# Kafka shuts down in its own hook; log4j2's hook would stop logging before it ends.
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# Per-partition chatter (thousands of lines at start and per topic created): warnings only.
logger.state.name = state.change.logger
logger.state.level = WARN
logger.partition.name = kafka.cluster.Partition
logger.partition.level = WARN
logger.logmanager.name = kafka.log.LogManager
logger.logmanager.level = WARN
logger.storage.name = org.apache.kafka.storage.internals
logger.storage.level = WARN
logger.txn.name = kafka.coordinator.transaction
logger.txn.level = WARN
logger.replication.name = org.apache.kafka.controller.ReplicationControlManager
logger.replication.level = WARN
logger.runtime.name = org.apache.kafka.coordinator.common.runtime
logger.runtime.level = WARN
"""
