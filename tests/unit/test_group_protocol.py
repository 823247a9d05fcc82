"""The consumer group protocol setting (issue 20 point 3): each protocol's librdkafka settings are ones
librdkafka accepts, and the rebalance scenario counts only the requests sent during the change."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from pipeline.errors import ConfigError
from pipeline.runtime.config import consumer_config
from pipeline.settings import Settings
from pipeline.tools.bench.loadgen import Arrival
from pipeline.tools.chaos.rebalance import window

# librdkafka refuses these with group.protocol=consumer ("defined broker side" / "use group.remote.assignor").
BROKER_SIDE = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_each_protocol_gives_a_consumer_librdkafka_accepts(protocol: str) -> None:
    settings = Settings.of(group_protocol=protocol, bootstrap_servers="127.0.0.1:1")
    config = consumer_config(settings, "g", "c", instance_id="c-0")
    if protocol == "consumer":
        assert config["group.protocol"] == "consumer"
        assert not set(BROKER_SIDE) & set(config)
    else:
        assert config["partition.assignment.strategy"] == "cooperative-sticky"
        assert "group.protocol" not in config
    Consumer(config).close()  # raises KafkaException(_INVALID_ARG) on a property the protocol refuses


def test_an_unknown_protocol_is_refused_with_the_variable_to_fix() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_GROUP_PROTOCOL='eager'"):
        Settings.from_env({"PIPELINE_GROUP_PROTOCOL": "eager"})


def test_the_change_counts_requests_sent_during_it() -> None:
    acked = {"before": 9.0, "a": 10.0, "b": 11.0, "c": 12.0, "d": 13.0, "after": 20.0}
    arrivals = [
        Arrival("before", "ok", None, 9.1),
        Arrival("a", "ok", None, 10.2),
        Arrival("b", "error", "deadline_exceeded", 14.0),
        Arrival("c", "ok", None, 13.5),
        Arrival("c", "ok", None, 13.6),  # a duplicate does not count twice
        Arrival("after", "ok", None, 25.0),
    ]  # d: never answered
    change = window("classic", acked, arrivals, 10.0, 15.0)
    assert (change.sent, change.not_ok, change.unanswered) == (4, 1, 1)
    assert change.not_ok_share == pytest.approx(0.5)
    assert change.p50_ms == pytest.approx(1500.0) and change.p99_ms == pytest.approx(3000.0)
    assert "4 sent, 2 not ok (50.00%)" in change.line()
