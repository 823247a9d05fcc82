"""Why a client could not connect: what librdkafka said, turned into one clear error.

A client with a wrong password, no TLS against a TLS listener, or an unknown
CA does not fail at once: librdkafka retries and the call that needed the
broker times out with a bare ``_TRANSPORT`` or ``_TIMED_OUT``. Every client
the pipeline makes carries a :class:`ConnectionProblems` as its ``error_cb``
(:func:`pipeline.kafka.config.common_config`), which remembers the errors it
was told about; :func:`refused` reads them to say what went wrong and which
setting fixes it, within the caller's own timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import AuthenticationError, BrokerError
from pipeline.settings import Settings

log = logging.getLogger("pipeline.kafka.auth")

# librdkafka's codes for "could not get in": SASL refused, TLS failed, connection dropped.
CONNECT_ERRORS = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)
LOG_EVERY_S = 30.0


class ConnectionProblems:
    """An ``error_cb``: keeps the last errors librdkafka reported and logs refusals (rate limited)."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.errors: deque[KafkaError] = deque(maxlen=16)
        self.lock = threading.Lock()
        self.logged: dict[str, float] = {}

    def __call__(self, error: KafkaError) -> None:
        with self.lock:
            self.errors.append(error)
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            now = time.monotonic()
            if now - self.logged.get(error.str(), -LOG_EVERY_S) >= LOG_EVERY_S:
                self.logged[error.str()] = now
                log.error("%s: the cluster refused this client: %s", self.client_id, error.str())

    def last(self, code: int) -> KafkaError | None:
        with self.lock:
            return next((e for e in reversed(self.errors) if e.code() == code), None)


def problems_of(config: dict[str, object]) -> ConnectionProblems | None:
    cb = config.get("error_cb")
    return cb if isinstance(cb, ConnectionProblems) else None


def refused(settings: Settings, problems: ConnectionProblems | None, what: str, cause: object) -> BrokerError:
    """The error for a failed ``what`` (e.g. "list topics"), explained by what the client was told."""
    servers = settings.bootstrap_servers
    reason = cause.args[0].str() if isinstance(cause, KafkaException) and cause.args else str(cause)
    if problems is not None:
        auth = problems.last(KafkaError._AUTHENTICATION)
        if auth is not None:
            return AuthenticationError(
                f"Kafka at {servers} refused SASL user {settings.sasl_username!r} ({settings.sasl_mechanism}): "
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
                f"PIPELINE_SECURITY_PROTOCOL={settings.security_protocol}: the listener wants another one "
                "(a secured cluster needs SASL_SSL and credentials)"
            )
        if transport is not None:
            reason = f"{reason} ({transport.str()})"
    return BrokerError(f"cannot {what} at {servers}: {reason}")
