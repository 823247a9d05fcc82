"""Why a client could not connect: what librdkafka said, turned into one clear error.

A client with a wrong password, no TLS against a TLS listener, or an unknown
CA does not fail at once: librdkafka retries and the call that needed the
broker times out with a bare ``_TRANSPORT`` or ``_TIMED_OUT``. Every client
the pipeline makes carries a :class:`ConnectionProblems` as its ``error_cb``
(:func:`pipeline.runtime.config.common_config`), which remembers the errors it
was told about; :func:`refused` reads them to say what went wrong and which
setting fixes it, within the caller's own timeout.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import AuthenticationError, AuthorizationError, BrokerError
from pipeline.settings import Settings

# The broker knows who we are, and an ACL does not allow it.
DENIED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


class ConnectionProblems:
    """An ``error_cb``: keeps the last errors librdkafka reported (its log lines already show them)."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.errors: deque[KafkaError] = deque(maxlen=16)
        self.lock = threading.Lock()
        # How many times every broker was out of reach at once: read without the
        # lock by a member's loop after each poll (StageRunner, an outage).
        self.all_down = 0

    def __call__(self, error: KafkaError) -> None:
        with self.lock:
            self.errors.append(error)
            if error.code() == KafkaError._ALL_BROKERS_DOWN:
                self.all_down += 1

    def refused(self) -> bool:
        """Whether the cluster refused our credentials or TLS (retrying will not help)."""
        return any(self.last(code) is not None for code in (KafkaError._AUTHENTICATION, KafkaError._SSL))

    def last(self, code: int) -> KafkaError | None:
        with self.lock:
            return next((e for e in reversed(self.errors) if e.code() == code), None)


def problems_of(config: dict[str, object]) -> ConnectionProblems | None:
    cb = config.get("error_cb")
    return cb if isinstance(cb, ConnectionProblems) else None


def refused(settings: Settings, problems: ConnectionProblems | None, what: str, cause: object) -> BrokerError:
    """The error for a failed ``what`` (e.g. "list topics"), explained by what the client was told."""
    servers, security = settings.kafka.bootstrap_servers, settings.security
    error = cause.args[0] if isinstance(cause, KafkaException) and cause.args else None
    reason = error.str() if isinstance(error, KafkaError) else str(cause)
    if isinstance(error, KafkaError) and error.code() in DENIED:
        return AuthorizationError(
            f"cannot {what} at {servers}: {reason} for user {security.sasl_username!r}; its ACLs are in "
            "topics/acls/ (pipeline topics acls shows them)"
        )
    if problems is not None:
        auth = problems.last(KafkaError._AUTHENTICATION)
        if auth is not None:
            return AuthenticationError(
                f"Kafka at {servers} refused SASL user {security.sasl_username!r} ({security.sasl_mechanism}): "
                f"{auth.str()}; check PIPELINE_SASL_USERNAME and its password (PIPELINE_SASL_PASSWORD_FILE)"
            )
        ssl = problems.last(KafkaError._SSL)
        if ssl is not None:
            return AuthenticationError(
                f"TLS with Kafka at {servers} failed: {ssl.str()}; check PIPELINE_SSL_CA_LOCATION (the CA that "
                "signed the brokers' certificates) and that the address matches their names"
            )
        transport = problems.last(KafkaError._TRANSPORT)
        if transport is not None and "security.protocol" in transport.str():
            return AuthenticationError(
                f"Kafka at {servers} dropped the connection: {transport.str()}; this client uses "
                f"PIPELINE_SECURITY_PROTOCOL={settings.security.security_protocol}: the listener wants another one "
                "(a secured cluster needs SASL_SSL and credentials)"
            )
        if transport is not None:
            reason = f"{reason} ({transport.str()})"
        down = problems.last(KafkaError._ALL_BROKERS_DOWN)
        if down is not None and not settings.sasl and any(accepts(a, 2.0) for a in servers.split(",")):
            # TCP gets through, Kafka's first request does not: a TLS or SASL listener.
            return AuthenticationError(
                f"Kafka at {servers} accepts connections but closes them at the first request: the listener "
                "wants TLS and credentials (PIPELINE_SECURITY_PROTOCOL=SASL_SSL, PIPELINE_SASL_USERNAME and a "
                f"password), this client uses PIPELINE_SECURITY_PROTOCOL={settings.security.security_protocol}"
            )
    return BrokerError(f"cannot {what} at {servers}: {reason}")


class RefusedTopics(logging.Filter):
    """The topics librdkafka logs as refused when it adds them to a transaction; every line passes on.

    An ACL that refuses a topic of a transaction fails the transactional call
    with TOPIC_AUTHORIZATION_FAILED and no topic in the error, and the records'
    delivery reports say only "purged"; librdkafka's log line (ADDPARTS)
    names the topic. Installed once per process on the ``librdkafka`` logger
    (:func:`watch_refused_topics`); read with :meth:`take`.
    """

    LINE = re.compile(r'partition "([^"]+)" \[\d+\] to transaction: Broker: Topic authorization failed')

    def __init__(self) -> None:
        super().__init__()
        self.topics: list[str] = []
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        match = self.LINE.search(record.getMessage())
        if match:
            with self.lock:
                self.topics += [match.group(1)] if match.group(1) not in self.topics else []
        return True

    def take(self) -> list[str]:
        with self.lock:
            topics, self.topics = self.topics, []
        return topics


REFUSED_TOPICS = RefusedTopics()


def watch_refused_topics() -> RefusedTopics:
    logger = logging.getLogger("librdkafka")
    if REFUSED_TOPICS not in logger.filters:
        logger.addFilter(REFUSED_TOPICS)
    return REFUSED_TOPICS


def denied(settings: Settings, who: str, what: str, error: KafkaError) -> AuthorizationError:
    """``who`` (a stage) was refused ``what`` ("write answers") by an ACL: the error it exits with.

    Retrying would be refused the same way (an ACL does not come back by
    itself), so a member that gets this ends instead of redoing its batch; its
    supervisor restarts it, and it works again once the ACL is back.
    """
    user = settings.security.sasl_username or "(no SASL user)"
    return AuthorizationError(
        f"{who}: Kafka refused user {user!r} to {what}: {error.str()}; its ACLs are in topics/acls/ "
        "(pipeline topics acls shows them, pipeline topics apply restores them)"
    )


def accepts(address: str, timeout_s: float) -> bool:
    """Whether anything accepts a TCP connection at ``host:port``."""
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def metadata(
    client: Any, settings: Settings, problems: ConnectionProblems | None, timeout_s: float, topic: str | None = None
) -> Any:
    """``client.list_topics`` that gives up as soon as the cluster refused us, not only at ``timeout_s``.

    A refused password or TLS handshake is known within a second, but
    librdkafka keeps retrying until the call times out; asking in short
    steps and looking at what the client was told in between fails fast.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.list_topics(topic, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            client.poll(0)  # serve the error callbacks: they say why
            given_up = time.monotonic() >= deadline
            if given_up or (problems is not None and problems.refused()):
                raise refused(settings, problems, "read metadata", exc) from exc
