"""What a principal may do on the secure broker, asked with plain Kafka clients (tests/integration/test_security.py).

Each probe returns the broker's refusal (a :class:`KafkaError`), or None when
the call was allowed, within :data:`REFUSED_WITHIN_S`: a refused client must
say so in bounded time, not hang.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.local.supervisor import Supervisor
from pipeline.operations.acls import Acl
from pipeline.operations.admin import TIMEOUT_S, _admin, _wait
from pipeline.operations.apply_acls import _exact, to_binding
from pipeline.runtime.config import consumer_config, producer_config
from pipeline.settings import Settings

REFUSED_WITHIN_S = 20.0
REFUSAL = re.compile(r"authori[sz]ation[ _]?fail", re.IGNORECASE)


def read_error(settings: Settings, topic: str, timeout_s: float = REFUSED_WITHIN_S) -> KafkaError | None:
    """Why ``settings``' user cannot read partition 0 of ``topic`` from the start; None if it can.

    A user with no right at all on the topic is told so in the metadata; one
    that may describe it (say, because it may write it) is refused the fetch.
    An assign-only consumer still has a group id (the Python client insists)
    and reports once that it may not look up that group's coordinator; that
    is not the read's error, and is skipped.
    """
    name = settings.topic(topic)
    consumer = Consumer(consumer_config(settings, f"{settings.security.sasl_username}-probe", "probe"))
    try:
        found = consumer.list_topics(name, timeout=10).topics[name]
        if found.error is not None:
            return found.error
        consumer.assign([TopicPartition(name, 0, 0)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return None  # a record: reading is allowed
            if error.code() != KafkaError.GROUP_AUTHORIZATION_FAILED:
                return error
        return None
    finally:
        consumer.close()


def produce_error(settings: Settings, topic: str, *, cluster_name: str | None = None) -> KafkaError | None:
    """Why ``settings``' user cannot write ``topic`` (or the topic named ``cluster_name`` as it is); None if it can."""
    producer = Producer(producer_config(settings, f"{settings.security.sasl_username}-probe"))
    results: list[KafkaError | None] = []
    name = cluster_name or settings.topic(topic)
    producer.produce(name, key=b"probe", value=b"{}", on_delivery=lambda err, _: results.append(err))
    assert producer.flush(REFUSED_WITHIN_S) == 0, "no delivery report in time"
    return results[0]


def group_error(settings: Settings, group: str, topic: str) -> int | None:
    """The error code when ``settings``' user commits an offset of ``topic`` in ``group``; None if it may."""
    committer = Consumer(consumer_config(settings, group, f"{settings.security.sasl_username}-in-{group}"))
    try:
        try:
            committer.commit(offsets=[TopicPartition(settings.topic(topic), 0, 0)], asynchronous=False)
        except KafkaException:
            pass
        else:
            return None
        # Why: the broker would not even say who coordinates that group for this user.
        deadline = time.monotonic() + REFUSED_WITHIN_S
        while time.monotonic() < deadline:
            message = committer.poll(0.2)
            if message is not None and message.error() is not None:
                code = message.error().code()
                if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    return int(code)
        return -1  # refused, and never told why
    finally:
        committer.close()


def revoke(settings: Settings, acl: Acl) -> None:
    """Take one binding off the cluster (as the admin), as an operator would by mistake."""
    admin = _admin(settings)  # held until the answer is in: a client destroyed meanwhile drops the request
    _wait(admin.delete_acls([_exact(to_binding(acl))], request_timeout=TIMEOUT_S), "delete ACL")


def exits(supervisor: Supervisor) -> dict[str, int]:
    """How often each member has exited so far: its restarts, and one more if it is dead now."""
    return {m.name: m.restarts + (m.process is not None and m.process.poll() is not None) for m in supervisor.members}


def wait_for_exit(supervisor: Supervisor, name: str, timeout_s: float) -> bool:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if exits(supervisor)[name]:
            return True
        time.sleep(0.2)
    return False


def refusals(log: Path) -> list[str]:
    """The lines of a member's log where the cluster refused it something."""
    return [line for line in log.read_text(errors="replace").splitlines() if REFUSAL.search(line)]
