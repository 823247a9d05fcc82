"""The Kafka clients of one stage member, made in one place so tests can hand in others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer

from pipeline.runtime import table
from pipeline.runtime.auth import ConnectionProblems, problems_of
from pipeline.runtime.config import consumer_config, producer_config, stage_producer_config
from pipeline.settings import Settings

Restore = Callable[[list[int]], dict[int, dict[bytes, bytes]]]
"""Partitions in, each one's state rows (as last committed to its changelog) out."""


@dataclass
class Clients:
    """The Kafka clients a member uses: real ones from :meth:`connect`, fakes in tests."""

    consumer: Any
    producer: Callable[[], Any]  # makes the (transactional) producer; again after a broker outage
    side: Callable[[], Any]  # makes the producer for sends outside transactions, on first use
    restore: Restore
    # What librdkafka told the consumer (its error_cb): how a member learns that
    # every broker was out of reach, which no consumed message says.
    problems: ConnectionProblems | None = None


def connect(settings: Settings, stage: str, client_id: str, changelog: str | None) -> Clients:
    """The real clients of one member of ``stage``."""
    group = settings.group(stage)
    transactional = settings.runtime.processing_guarantee.transactional
    # Static membership: a restarted member (same id) takes its partitions back
    # without a rebalance; only members with a stable id (PIPELINE_MEMBER) get one.
    instance = client_id if settings.runtime.member else None
    consumer = consumer_config(settings, group, client_id, instance_id=instance)
    return Clients(
        consumer=Consumer(consumer),
        producer=lambda: Producer(
            stage_producer_config(settings, client_id, transactional_id=client_id if transactional else None)
        ),
        side=lambda: Producer(producer_config(settings, f"{client_id}-side")),
        restore=lambda partitions: table.restore(settings, changelog or "", group, partitions),
        problems=problems_of(consumer),
    )
