"""librdkafka settings for every client the pipeline makes, in one place.

Dotted dicts as librdkafka spells them; every key that differs from
librdkafka's default says why. Stages never build a client config themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.runtime.auth import ConnectionProblems
from pipeline.security import sasl_password, sasl_user
from pipeline.settings import Settings

ClientConfig = dict[str, Any]

DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024 + 64 * 1024
"""topics/dead-letters.toml's max.message.bytes, plus room for the record overhead."""


def common_config(settings: Settings, client_id: str) -> ClientConfig:
    config: ClientConfig = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        # Shows up in broker logs and quotas: which stage member is talking.
        "client.id": client_id,
        # librdkafka's own log lines go through Python logging (served on
        # poll), not straight to stderr, so commands print none of them.
        "logger": logging.getLogger("librdkafka"),
        # Remembers why connecting failed (wrong password, TLS, wrong
        # protocol), so a timeout can say so (pipeline.runtime.auth.refused).
        "error_cb": ConnectionProblems(client_id),
    }
    config.update(security_config(settings))
    return config


def security_config(settings: Settings) -> ClientConfig:
    """TLS and SASL for every client: nothing on a PLAINTEXT cluster (docs/security.md)."""
    if settings.security.security_protocol == "PLAINTEXT":
        return {}
    # SSL, SASL_SSL, SASL_PLAINTEXT: as the cluster's listener wants.
    config: ClientConfig = {"security.protocol": settings.security.security_protocol.lower()}
    if settings.security.security_protocol.endswith("SSL") and settings.security.ssl_ca_location:
        # The CA that signed the brokers' certificates (the local secure
        # broker's own, or a company CA); without it, the system's CAs.
        config["ssl.ca.location"] = settings.security.ssl_ca_location
    if settings.sasl:
        config.update(
            {
                "sasl.mechanism": settings.security.sasl_mechanism,
                "sasl.username": sasl_user(settings.security),
                "sasl.password": sasl_password(settings.security),
            }
        )
    return config


def admin_config(settings: Settings) -> ClientConfig:
    return common_config(settings, f"{settings.kafka.prefix}pipeline-admin")


def producer_config(settings: Settings, client_id: str, *, transactional_id: str | None = None) -> ClientConfig:
    config = common_config(settings, client_id)
    config.update(
        {
            # No duplicates or reordering on retries within a partition.
            "enable.idempotence": True,
            # Real-time traffic: send at once rather than wait to fill batches.
            "linger.ms": 1,
            # Fail a send after 30 s instead of librdkafka's 300 s, so a dead
            # broker surfaces as an error while the request can still be retried.
            "message.timeout.ms": 30_000,
            # Keyed records must land where Java clients would put them: merge
            # finds a request's parts, and its own ticks, by key.
            "partitioner": "murmur2_random",
            # PIPELINE_COMPRESSION (lz4): requests and answers are text, parts
            # carry token ids as JSON numbers, which compress well.
            "compression.type": settings.runtime.compression,
            # A dead letter holds a whole rejected record (up to the 2 MiB of
            # requests) plus the reason: librdkafka's 1 MB default would refuse it
            # and the stage would crash on the same record again and again.
            "message.max.bytes": DEAD_LETTER_MAX_BYTES,
        }
    )
    if transactional_id is not None:
        config.update(
            {
                "transactional.id": transactional_id,
                # If a member dies mid-transaction and no successor with its id
                # comes back, the broker aborts the transaction after this long;
                # until then read_committed readers of those partitions wait.
                # (60 s, to ride out a coordinator failover on three brokers, was
                # tried with a 45 s budget and undone: docs/reliability.md.)
                "transaction.timeout.ms": 10_000,
                # librdkafka requires sends to time out within the transaction.
                # 10 s, not more: after a single broker's 5 s restart, sends
                # librdkafka never retried failed only at this timeout, and the
                # batch was redone then; at 30 s filter stalled 30 s and 49 of
                # 480 requests missed their deadline (issue 20 broker-restart).
                "message.timeout.ms": 10_000,
            }
        )
    return config


def stage_producer_config(settings: Settings, client_id: str, *, transactional_id: str | None = None) -> ClientConfig:
    """A stage member's producer of a batch's outputs: every batch ends in flush() or commit_transaction()."""
    config = producer_config(settings, client_id, transactional_id=transactional_id)
    # Both end a batch by sending at once whatever waits (librdkafka >= 1.8
    # ignores linger.ms in flush, #3494), so lingering costs no latency; it
    # keeps a batch's outputs in fewer, larger produce requests while the
    # handler's outputs are still being handed over: less CPU for the
    # member and the broker per record.
    config["linger.ms"] = 20
    return config


def client_producer_config(settings: Settings, client_id: str) -> ClientConfig:
    """A client's producer of requests: like the stages', but it rides out a broker restart."""
    config = producer_config(settings, client_id)
    # A request waits in the client's queue through a broker outage of up to
    # two minutes instead of failing after 30 s; its own deadline still says
    # whether the answer is deadline_exceeded.
    config["message.timeout.ms"] = 120_000
    return config


def consumer_config(settings: Settings, group: str, client_id: str, *, instance_id: str | None = None) -> ClientConfig:
    config = common_config(settings, client_id)
    config.update(
        {
            "group.id": group,
            # Offsets are committed by the runner only after the outputs they
            # caused are acknowledged (or inside the same transaction).
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # A new group starts at the beginning: requests produced before the
            # stage first started must still be answered.
            "auto.offset.reset": "earliest",
            # Only see outputs of committed transactions of the stage before.
            "isolation.level": "read_committed",
            # The runner polls while a batch runs in a worker thread, so only a
            # hung process gets near this; 60 s instead of 300 s by default.
            "max.poll.interval.ms": settings.runtime.max_poll_interval_ms,
            # The broker holds a fetch until data is there or this passes
            # (librdkafka: 500 ms); PIPELINE_FETCH_WAIT_MAX_MS says why it is set.
            "fetch.wait.max.ms": settings.runtime.fetch_wait_max_ms,
        }
    )
    config.update(group_protocol_config(settings))
    if instance_id is not None:
        # Static membership (KIP-345): a member restarted with the same id gets
        # its partitions back at once, without a rebalance of the whole group.
        # Its partitions wait for it up to session.timeout.ms, not longer.
        config["group.instance.id"] = instance_id
    return config


def group_protocol_config(settings: Settings) -> ClientConfig:
    """How the group assigns partitions and notices a dead member, per PIPELINE_GROUP_PROTOCOL."""
    if settings.runtime.group_protocol == "consumer":
        return {
            # KIP-848: the broker computes each member's target assignment and
            # members move towards it one partition at a time, heartbeating;
            # nobody stops to rejoin when a member comes or goes. librdkafka
            # then refuses partition.assignment.strategy, session.timeout.ms and
            # heartbeat.interval.ms ("defined broker side"): the session
            # (10 s) and heartbeat (0.5 s) are the broker's group.consumer.*
            # settings (pipeline.local.broker_config). The broker's default
            # assignor (uniform) balances partitions like cooperative-sticky.
            "group.protocol": "consumer",
        }
    return {
        # Incremental rebalancing: adding an infer member moves only the
        # partitions it takes, the others keep working.
        "partition.assignment.strategy": "cooperative-sticky",
        # Detect a dead member in 10 s instead of 45 s, so its partitions
        # move to the survivors quickly.
        "session.timeout.ms": 10_000,
        # A cooperative rebalance is two rounds, and members learn of the
        # second from a heartbeat: the partitions a new member takes have no
        # owner until then. At 2 s, scaling four stages at once left each
        # moved partition idle 2 s per stage and p99 at 3.7 s while scaling up
        # (docs/reliability.md); at 0.5 s it is a fraction of a second, for
        # two small requests a second per member.
        "heartbeat.interval.ms": 500,
    }


LOAD_MESSAGE_MAX_BYTES = 16 * 1024 * 1024
"""The load generator's own record size limit: far above every topic's, so the broker decides."""


def load_producer_config(settings: Settings, client_id: str) -> ClientConfig:
    """The chaos suite's load generator: a plain client producing raw records (pipeline.tools.bench.loadgen)."""
    config = producer_config(settings, client_id)
    config.update(
        {
            # Oversized fuzz records must reach the broker and be refused there,
            # as they would be from any client, not stop in this producer.
            "message.max.bytes": LOAD_MESSAGE_MAX_BYTES,
            # Keep requests produced while the broker is down for a whole
            # 60 s outage instead of failing them after 30 s.
            "message.timeout.ms": 180_000,
            # Records are counted as sent when acknowledged; compression would
            # hide the sizes the fuzz corpus means to send.
            "compression.type": "none",
            # The suite stops the broker on purpose: librdkafka's "connection
            # refused" every 50 ms would bury the report (errors still arrive
            # as delivery reports).
            "log_level": 2,
        }
    )
    return config


def load_consumer_config(settings: Settings, group: str, client_id: str) -> ClientConfig:
    """The chaos suite's answer reader: a plain read_committed client (pipeline.tools.bench.loadgen)."""
    config = consumer_config(settings, group, client_id)
    # As the load producer: the broker going away is the point, not news.
    config["log_level"] = 2
    return config


def telemetry_producer_config(settings: Settings, client_id: str) -> ClientConfig:
    """A member's telemetry (pipeline.runtime.telemetry): best effort, never in the way of answers."""
    config = common_config(settings, client_id)
    config.update(
        {
            # One report a second: no reason to wait for more before sending.
            "linger.ms": 5,
            # A report older than this says nothing the next one will not:
            # drop it rather than hold memory while the broker is away.
            "message.timeout.ms": 10_000,
            "queue.buffering.max.messages": 1_000,
            # Duplicates after a retry only count twice in a dashboard.
            "enable.idempotence": False,
            "acks": 1,
            # Reports are JSON with repeated keys and numbers. gzip, not lz4:
            # the monitor reads them with aiokafka (faust), which decompresses
            # gzip with the standard library and lz4 only with an extra package.
            "compression.type": "gzip",
            # A broker away is the runner's news, not this producer's: at 3
            # (errors) it still logged every refused connection, hundreds a
            # second during an outage, burying the member's own lines.
            "log_level": 2,
        }
    )
    return config
