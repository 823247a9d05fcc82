"""The local broker's configuration files, rendered from Settings (see pipeline.local.broker)."""

from __future__ import annotations

from pathlib import Path

from pipeline.local import secure
from pipeline.settings import Settings

BROKER_MESSAGE_MAX_BYTES = 4 * 1024 * 1024
"""The broker-wide record size limit; each declared topic sets its own below it."""

__all__ = ["BROKER_MESSAGE_MAX_BYTES", "LOG4J2_PROPERTIES", "render_server_properties"]


def render_server_properties(settings: Settings, data_dir: Path) -> str:
    """The broker's server.properties: a single node that is broker and controller."""
    host, port, cport = settings.broker.kafka_host, settings.broker.kafka_port, settings.broker.kafka_controller_port
    return "\n".join(
        [
            "# Written by `pipeline kafka start` from Settings (PIPELINE_KAFKA_*); edits are overwritten.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={host}:{cport}",
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
            "# One node: every internal topic has one replica, and one in-sync replica is enough.",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "# Tests and demos start their consumers at once: no 3 s wait for more group members.",
            "group.initial.rebalance.delay.ms=0",
            "# Every topic, merge's state included, comes from topics/ (pipeline topics apply),",
            "# never from a producer's typo.",
            "auto.create.topics.enable=false",
            "# Above every declared topic's max.message.bytes (each topic sets its own).",
            f"message.max.bytes={BROKER_MESSAGE_MAX_BYTES}",
            "",
        ]
    )


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
