"""The topic declarations under ``topics/``, read into frozen specs.

Each topic is declared once, in ``topics/<name>.toml``::

    name = "requests"
    partitions = 12
    carries = "what one record holds and how it is keyed"

    [config]                      # topic-level Kafka configs, as Kafka spells them
    "cleanup.policy" = "delete"
    "retention.ms" = 604800000
    "max.message.bytes" = 2097152

This module only reads and checks them (no Kafka here):
:func:`pipeline.operations.admin.apply_topics` makes a cluster match them. The
cluster-side name is ``settings.topic(name)``, so with a prefix several
pipelines (or tests) share one cluster.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import Settings

REQUIRED_CONFIG: tuple[str, ...] = ("cleanup.policy", "retention.ms", "max.message.bytes")
"""Configs every declaration must state, so none depends on a broker default."""

_KEYS = frozenset({"name", "partitions", "carries", "config"})
# Kafka's rule for topic names: these characters, at most 249 of them.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_CONFIG_KEY = re.compile(r"[a-z0-9]+(\.[a-z0-9]+)*")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One declared topic.

    ``name`` is the declared name (``requests``); ``topic`` the name on the
    cluster (``settings.topic(name)``, the prefix included). Config values are
    strings, as Kafka's admin API takes and returns them.
    """

    name: str
    topic: str
    partitions: int
    carries: str
    config: Mapping[str, str] = field(hash=False)
    source: Path


def load_topics(settings: Settings) -> dict[str, TopicSpec]:
    """Every declaration in ``settings.kafka.topics_dir``, by declared name, sorted.

    Raises :class:`ConfigError` naming the file for anything malformed.
    """
    directory = settings.kafka.topics_dir
    if not directory.is_dir():
        raise ConfigError(f"topic declarations folder {directory} does not exist (PIPELINE_TOPICS_DIR)")
    specs: dict[str, TopicSpec] = {}
    for path in sorted(directory.glob("*.toml")):
        spec = load_topic(path, settings)
        specs[spec.name] = spec
    if not specs:
        raise ConfigError(f"no topic declarations (*.toml) in {directory}")
    return specs


def load_topic(path: Path, settings: Settings) -> TopicSpec:
    """Read and check one declaration file."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read topic declaration: {exc}", where=str(path)) from exc
    return _parse(data, path, settings)


def _parse(data: dict[str, Any], path: Path, settings: Settings) -> TopicSpec:
    def fail(message: str) -> ConfigError:
        return ConfigError(message, where=str(path))

    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise fail(f"unknown keys {unknown}; a declaration has {sorted(_KEYS)}")
    missing = sorted(_KEYS - set(data))
    if missing:
        raise fail(f"missing keys {missing}")

    name = data["name"]
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name):
        raise fail(f"name {name!r} is not a valid Kafka topic name (letters, digits, '.', '_', '-')")
    if name != path.stem:
        raise fail(f"name {name!r} differs from the file name; declare topic {name!r} in {name}.toml")
    topic = settings.topic(name)
    if not _TOPIC_NAME.fullmatch(topic):
        raise fail(f"cluster name {topic!r} (prefix {settings.kafka.prefix!r}) is not a valid Kafka topic name")

    partitions = data["partitions"]
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise fail(f"partitions must be a positive integer, not {partitions!r}")

    carries = data["carries"]
    if not isinstance(carries, str) or not carries.strip():
        raise fail("carries must say what the topic carries and how it is keyed")

    raw_config = data["config"]
    if not isinstance(raw_config, dict):
        raise fail("config must be a table of Kafka topic configs")
    config = {key: _config_value(key, value, fail) for key, value in raw_config.items()}
    absent = [key for key in REQUIRED_CONFIG if key not in config]
    if absent:
        raise fail(f"[config] must set {absent}")

    return TopicSpec(
        name=name,
        topic=topic,
        partitions=partitions,
        carries=" ".join(carries.split()),
        config=MappingProxyType(dict(sorted(config.items()))),
        source=path,
    )


def _config_value(key: str, value: object, fail: Callable[[str], ConfigError]) -> str:
    if not _CONFIG_KEY.fullmatch(key):
        raise fail(f"config key {key!r} is not a Kafka config name")
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise fail(f"config {key} = {value!r}: use a string, integer or boolean")
