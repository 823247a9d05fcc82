"""The clients' tuning settings (issue 19 point 2): each reaches librdkafka, in a form it accepts."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer

from pipeline.errors import ConfigError
from pipeline.runtime.config import consumer_config, stage_producer_config
from pipeline.settings import Settings
from pipeline.settings_env import COMPRESSIONS


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_each_compression_gives_a_producer_librdkafka_accepts(compression: str) -> None:
    settings = Settings.of(compression=compression, bootstrap_servers="127.0.0.1:1")
    config = stage_producer_config(settings, "p", transactional_id="t")
    assert config["compression.type"] == compression
    Producer(config).flush(0)  # raises KafkaException(_INVALID_ARG) on a value librdkafka refuses


def test_an_unknown_compression_is_refused_with_the_variable_to_fix() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_COMPRESSION='brotli'"):
        Settings.from_env({"PIPELINE_COMPRESSION": "brotli"})


def test_the_fetch_wait_is_every_consumer_s() -> None:
    assert consumer_config(Settings(), "g", "c")["fetch.wait.max.ms"] == 10
    settings = Settings.from_env({"PIPELINE_FETCH_WAIT_MAX_MS": "100", "PIPELINE_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    config = consumer_config(settings, "g", "c")
    assert config["fetch.wait.max.ms"] == 100
    Consumer(config).close()
