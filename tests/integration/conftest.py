"""Fixtures for tests against a real Kafka broker.

Every test in tests/integration is marked ``integration`` and needs the broker
at ``PIPELINE_BOOTSTRAP_SERVERS`` (127.0.0.1:9092 unless set); `make test`
starts the project's own broker first. Without one, these tests are skipped on
a laptop and fail in CI (``CI=true``), so CI never passes by skipping them.

* ``kafka`` (session): Settings from the environment, checked against the broker;
  ``broker`` (session): just its bootstrap servers string.

Each test works in its own namespace on the shared broker:

* ``settings``: Settings with a unique ``prefix`` (``t1a2b3c4d-``), so its
  topics (``settings.topic(name)``) and consumer groups (``settings.group(stage)``)
  are its own. They are deleted after the test.
* ``topics``: the topics of topics/ created under that prefix; returns the
  declarations by name (``topics["requests"].topic`` is the cluster name).

A new integration test only asks for them::

    def test_something(settings: Settings, topics: dict[str, TopicSpec]) -> None:
        producer = Producer(producer_config(settings, "test"))
        producer.produce(topics["requests"].topic, ...)
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import BrokerError, PipelineError
from pipeline.operations.admin import apply_topics, check_broker, delete_prefixed
from pipeline.settings import Settings
from pipeline.topics import TopicSpec, load_topics

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def kafka() -> Settings:
    """Settings from the environment, once a broker answers at their bootstrap servers."""
    settings = Settings.from_env()
    try:
        check_broker(settings, timeout_s=10.0)
    except BrokerError as exc:
        message = f"{exc}; start one with `make broker` (or `pipeline kafka start`)"
        if _in_ci():
            pytest.fail(f"CI=true and no Kafka broker: {message}", pytrace=False)
        pytest.skip(message)
    return settings


@pytest.fixture(scope="session")
def broker(kafka: Settings) -> str:
    """The bootstrap servers of the test broker, for tests that build their own Settings."""
    return kafka.kafka.bootstrap_servers


@pytest.fixture(autouse=True)
def _needs_kafka(kafka: Settings) -> None:
    """Every integration test needs the broker, whether or not it asks for ``settings``."""


@pytest.fixture
def settings(kafka: Settings) -> Iterator[Settings]:
    """Settings with a prefix of this test's own; its topics and groups are deleted afterwards."""
    settings = kafka.replace(prefix=f"t{uuid.uuid4().hex[:8]}-")
    yield settings
    try:
        delete_prefixed(settings)
    except PipelineError as exc:  # a leftover never fails the test that made it
        warnings.warn(f"could not clean up prefix {settings.kafka.prefix}: {exc}", stacklevel=1)


@pytest.fixture
def topics(settings: Settings) -> dict[str, TopicSpec]:
    """The declared topics, created on the broker under this test's prefix."""
    apply_topics(settings)
    return load_topics(settings)
