"""Make a cluster's topics match the declarations under ``topics/``.

:func:`apply_topics` is idempotent: it creates missing topics, raises
partition counts that are below the declaration (Kafka cannot lower them, so
a topic with more is left as is and reported), and brings topic configs to the
declaration with incremental alters. A second run changes nothing.
:func:`list_topics` compares without changing anything.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from pipeline.errors import BrokerError, ConfigError
from pipeline.runtime.auth import accepts, metadata, problems_of
from pipeline.runtime.config import admin_config
from pipeline.settings import Settings
from pipeline.topics import TopicSpec, load_topics

TIMEOUT_S = 15.0
"""How long one admin operation may take before we call the broker unreachable."""

# -1: the cluster's default.replication.factor (1 on the local broker, 3 on a managed cluster).
REPLICATION_FACTOR = -1

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class TopicChanges:
    """What :func:`apply_topics` did to one declared topic."""

    name: str
    topic: str
    changes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApplyReport:
    topics: tuple[TopicChanges, ...]

    @property
    def changed(self) -> bool:
        return any(t.changes for t in self.topics)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"{t.topic}: {w}" for t in self.topics for w in t.warnings)

    def summary(self) -> str:
        """One line: how many topics were changed, left alone, warned about."""
        changed = sum(1 for t in self.topics if t.changes)
        return f"{changed} changed, {len(self.topics) - changed} unchanged, {len(self.warnings)} warning(s)"


@dataclass(frozen=True, slots=True)
class TopicState:
    """A declared topic next to what the cluster has."""

    spec: TopicSpec
    partitions: int | None  # None: the topic does not exist
    # Declared configs whose actual value differs: key -> (declared, actual).
    config_diff: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    # Topic-level overrides on the cluster that the declaration does not set.
    extra_config: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.partitions is None:
            return "missing"
        if self.partitions < self.spec.partitions or self.config_diff or self.extra_config:
            return "differs"
        if self.partitions > self.spec.partitions:
            return "more partitions"
        return "ok"


def apply_topics(settings: Settings) -> ApplyReport:
    """Create or update every declared topic (names with ``settings.kafka.prefix``)."""
    specs = load_topics(settings)
    admin = _admin(settings)
    actual = _partition_counts(admin)
    missing = [spec for spec in specs.values() if spec.topic not in actual]
    created = _create(admin, missing)
    if len(created) < len(missing):  # someone else created some meanwhile
        actual = _partition_counts(admin)

    existing = [spec for spec in specs.values() if spec.topic not in created]
    configs = _describe_configs(admin, [spec.topic for spec in existing])
    alters: dict[str, list[ConfigEntry]] = {}
    reports: dict[str, TopicChanges] = {}
    grow: list[NewPartitions] = []
    for spec in specs.values():
        if spec.topic in created:
            reports[spec.name] = TopicChanges(spec.name, spec.topic, (f"created with {spec.partitions} partitions",))
            continue
        changes: list[str] = []
        warnings: list[str] = []
        count = actual[spec.topic]
        if count < spec.partitions:
            grow.append(NewPartitions(spec.topic, spec.partitions))
            changes.append(f"partitions {count} -> {spec.partitions}")
        elif count > spec.partitions:
            warnings.append(
                f"has {count} partitions, declared {spec.partitions}: Kafka cannot decrease partitions; left as is"
            )
        diff, extra = _compare(spec, configs[spec.topic])
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, (v, _) in diff.items()]
        entries += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in extra]
        changes += [f"{k} {old} -> {new}" for k, (new, old) in diff.items()]
        changes += [f"{k} {old} -> broker default (not declared)" for k, old in extra.items()]
        if entries:
            alters[spec.topic] = entries
        reports[spec.name] = TopicChanges(spec.name, spec.topic, tuple(changes), tuple(warnings))

    if grow:
        futures = admin.create_partitions(grow, operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
        _wait(futures, "add partitions to topic")
    if alters:
        resources = [ConfigResource(ResourceType.TOPIC, t, incremental_configs=e) for t, e in alters.items()]
        altered = admin.incremental_alter_configs(resources, request_timeout=TIMEOUT_S)
        _wait({r.name: f for r, f in altered.items()}, "alter the configs of topic")
    touched = [spec for spec in specs.values() if reports[spec.name].changes]
    if touched:
        _settle(admin, touched)
    return ApplyReport(tuple(reports[name] for name in specs))


def list_topics(settings: Settings) -> list[TopicState]:
    """Every declared topic with its actual partitions and configs; changes nothing."""
    specs = load_topics(settings)
    admin = _admin(settings)
    actual = _partition_counts(admin)
    configs = _describe_configs(admin, [s.topic for s in specs.values() if s.topic in actual])
    states = []
    for spec in specs.values():
        if spec.topic not in actual:
            states.append(TopicState(spec, None))
            continue
        diff, extra = _compare(spec, configs[spec.topic])
        states.append(TopicState(spec, actual[spec.topic], diff, extra))
    return states


def check_broker(settings: Settings, timeout_s: float = 5.0) -> int:
    """Ask ``settings.kafka.bootstrap_servers`` for metadata; return how many brokers answered.

    Raises :class:`BrokerError` when none does. A plain TCP connect is tried
    first, so a missing broker fails fast and without librdkafka's retry noise.
    """
    servers = settings.kafka.bootstrap_servers
    if not any(accepts(address, min(timeout_s, 2.0)) for address in servers.split(",")):
        raise BrokerError(f"no Kafka broker at {servers}: nothing accepts connections there")
    config = admin_config(settings)
    found = metadata(AdminClient(config), settings, problems_of(config), timeout_s)
    return len(found.brokers)


def delete_prefixed(settings: Settings) -> tuple[list[str], list[str]]:
    """Delete every topic and consumer group whose name starts with ``settings.kafka.prefix``.

    For tests, which each work under a unique prefix. Returns (topics, groups).
    """
    if not settings.kafka.prefix:
        raise ConfigError("refusing to delete topics and groups without a prefix: that would be all of them")
    admin = _admin(settings)
    topics = sorted(t for t in _partition_counts(admin) if t.startswith(settings.kafka.prefix))
    if topics:
        _wait(admin.delete_topics(topics, operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S), "delete topic")
    listing = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    groups = sorted(g.group_id for g in listing.valid if g.group_id.startswith(settings.kafka.prefix))
    if groups:
        # Static members do not leave on close (KIP-345): their group is not
        # empty until their session times out. It is left behind, empty, then.
        busy = _wait(admin.delete_consumer_groups(groups, request_timeout=TIMEOUT_S), "delete consumer group",
                     tolerate=KafkaError.NON_EMPTY_GROUP)  # fmt: skip
        groups = [g for g in groups if g not in busy]
    return topics, groups


def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> None:
    """Create those of ``specs`` the cluster lacks, then wait until the broker shows all of them.

    For topics a tool would otherwise create for itself at start (the
    monitor's faust changelogs): one that reads the broker's metadata a moment
    too early sees such a topic with no partitions yet.
    """
    admin = _admin(settings)
    counts = _partition_counts(admin)
    _create(admin, [spec for spec in specs if spec.topic not in counts])
    _settle(admin, specs)


# -- helpers ----------------------------------------------------------------------


def _admin(settings: Settings) -> AdminClient:
    # librdkafka's own log lines go to Python logging (see config.common_config);
    # failures still surface as exceptions from the admin calls.
    return AdminClient(admin_config(settings))


def _partition_counts(admin: AdminClient) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics: {_reason(exc)}") from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def _create(admin: AdminClient, specs: list[TopicSpec]) -> set[str]:
    """Create ``specs``; return the names created (not those that appeared meanwhile)."""
    if not specs:
        return set()
    new = [
        NewTopic(s.topic, num_partitions=s.partitions, replication_factor=REPLICATION_FACTOR, config=dict(s.config))
        for s in specs
    ]
    futures = admin.create_topics(new, operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    raced = _wait(futures, "create topic", tolerate=KafkaError.TOPIC_ALREADY_EXISTS)
    return {s.topic for s in specs} - raced


def _describe_configs(admin: AdminClient, topics: list[str]) -> dict[str, dict[str, ConfigEntry]]:
    if not topics:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics], request_timeout=TIMEOUT_S)
    results = _wait({r.name: f for r, f in futures.items()}, "describe the configs of topic", collect=True)
    return {topic: dict(entries) for topic, entries in results.items()}


def _compare(
    spec: TopicSpec, entries: Mapping[str, ConfigEntry]
) -> tuple[dict[str, tuple[str, str | None]], dict[str, str]]:
    """(declared keys whose value differs -> (declared, actual), undeclared topic overrides -> value)."""
    diff: dict[str, tuple[str, str | None]] = {}
    for key, wanted in spec.config.items():
        entry = entries.get(key)
        actual = None if entry is None else entry.value
        if actual != wanted:
            diff[key] = (wanted, actual)
    extra = {
        key: str(entry.value)
        for key, entry in sorted(entries.items())
        if key not in spec.config and entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    }
    return diff, extra


def _settle(admin: AdminClient, specs: list[TopicSpec]) -> None:
    """Wait until the broker shows what the controller accepted.

    The broker's metadata and config caches trail the controller by a moment;
    callers (a stage starting, a second apply) must see the declared state.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        counts = _partition_counts(admin)
        if all(counts.get(spec.topic, 0) >= spec.partitions for spec in specs):
            try:
                configs = _describe_configs(admin, [spec.topic for spec in specs])
            except BrokerError:  # unknown topic: not in the config cache yet
                configs = {}
            if configs and not any(any(_compare(spec, configs[spec.topic])) for spec in specs):
                return
        if time.monotonic() > deadline:
            names = ", ".join(spec.topic for spec in specs)
            raise BrokerError(f"topics {names} do not show their declared state {TIMEOUT_S:.0f} s after applying it")
        time.sleep(0.1)


def _wait(futures: Mapping[K, Future[Any]], what: str, *, tolerate: int | None = None, collect: bool = False) -> Any:
    """Wait for admin futures keyed by name; raise BrokerError naming the one that failed.

    Returns the keys whose error code was ``tolerate`` or, with ``collect``,
    a dict of their results.
    """
    tolerated: set[K] = set()
    results: dict[K, Any] = {}
    for key, future in futures.items():
        try:
            results[key] = future.result(timeout=TIMEOUT_S * 2)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if tolerate is not None and isinstance(error, KafkaError) and error.code() == tolerate:
                tolerated.add(key)
                continue
            raise BrokerError(f"cannot {what} {key}: {_reason(exc)}") from exc
        except TimeoutError as exc:
            raise BrokerError(f"cannot {what} {key}: no answer within {TIMEOUT_S * 2:.0f} s") from exc
    return results if collect else tolerated


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


@dataclass(frozen=True, slots=True)
class Leadership:
    """Who leads what, from one metadata request: partitions led per broker id, and the laggards."""

    brokers: list[int]  # registered (unfenced) broker ids
    led: dict[int, int]  # broker id -> partitions it leads (internal topics included)
    leaderless: int  # partitions with no leader right now
    under_replicated: int  # partitions whose ISR is smaller than their replica set
    leaders: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> leader id


def leadership(settings: Settings, timeout_s: float = 5.0) -> Leadership:
    """Partition leadership across the cluster at ``settings.kafka.bootstrap_servers``."""
    try:
        found = _admin(settings).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"no metadata from {settings.kafka.bootstrap_servers}: {_reason(exc)}") from exc
    led: dict[int, int] = dict.fromkeys(sorted(found.brokers), 0)
    leaders: dict[tuple[str, int], int] = {}
    leaderless = under = 0
    for name, topic in found.topics.items():
        for pid, part in topic.partitions.items():
            leaders[(name, pid)] = part.leader
            if part.leader < 0:
                leaderless += 1
            else:
                led[part.leader] = led.get(part.leader, 0) + 1
            if len(part.isrs) < len(part.replicas):
                under += 1
    return Leadership(sorted(found.brokers), led, leaderless, under, leaders)
