"""The local broker's configuration and the checks `pipeline kafka start` makes before starting Java."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.errors import BrokerError, ConfigError
from pipeline.local import broker, broker_config, layout
from pipeline.settings import Settings
from tests.net import free_port


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A broker in tmp_path on ports nothing uses."""
    return Settings.of(kafka_dir=tmp_path / "kafka", kafka_port=free_port(), kafka_controller_port=free_port())


def test_server_properties_make_one_kraft_node(tmp_path: Path) -> None:
    settings = Settings.of(kafka_host="127.0.0.1", kafka_port=9192, kafka_controller_port=9193)
    props = _properties(broker.render_server_properties(settings, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9193"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9192"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert int(props["message.max.bytes"]) == broker_config.BROKER_MESSAGE_MAX_BYTES


def test_broker_accepts_every_declared_topic_size() -> None:
    from pipeline.topics import load_topics

    for spec in load_topics(Settings()).values():
        assert int(spec.config["max.message.bytes"]) <= broker_config.BROKER_MESSAGE_MAX_BYTES, spec.name


def test_java_command_has_heap_logging_and_classpath(settings: Settings) -> None:
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    paths = broker.paths(settings)
    command = broker.java_command(settings, paths, "kafka.Kafka", "server.properties")
    assert "-Xmx1g" in command
    assert f"-Dlog4j2.configurationFile={paths.log4j2_properties}" in command
    assert command[-4:] == ["-cp", f"{paths.libs}/*", "kafka.Kafka", "server.properties"]


def test_cluster_ids_look_like_kafka_uuids() -> None:
    ids = {broker.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")


def test_missing_jars_say_run_make_setup(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "PROJECT_LIBS", tmp_path / "no-libs")
    with pytest.raises(ConfigError, match="run `make setup`"):
        broker.start(settings)


def test_a_taken_port_is_a_clear_error(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", settings.broker.kafka_port))
        sock.listen()
        with pytest.raises(BrokerError, match=rf"127.0.0.1:{settings.broker.kafka_port} is already in use"):
            broker.start(settings)


def test_storage_formatted_for_another_controller_is_refused(settings: Settings) -> None:
    paths = broker.paths(settings)
    paths.data.mkdir(parents=True)
    (paths.data / "meta.properties").write_text("cluster.id=x\n")
    paths.cluster.write_text("cluster.id=x\ncontroller=127.0.0.1:1\n")
    with pytest.raises(ConfigError, match=r"formatted for controller 127\.0\.0\.1:1,"):
        broker._format_once(settings, paths, print)


def test_status_and_stop_when_nothing_runs(settings: Settings) -> None:
    paths = broker.paths(settings)
    paths.root.mkdir(parents=True)
    paths.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    state = broker.status(settings)
    assert (state.up, state.pid) == (False, None)
    state = broker.stop(settings)
    assert not state.stopped
    assert not paths.pid_file.exists(), "a stale pid file is removed"


def test_kafka_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["kafka", "start", "--port", "19092", "--controller-port", "19093", "--heap", "512m"])
    assert (args.port, args.controller_port, args.heap) == (19092, 19093, "512m")
    for action in ("status", "stop"):
        assert callable(parser.parse_args(["kafka", action]).func)
    args = parser.parse_args(["topics", "list", "--check", "--prefix", "x-"])
    assert args.check and args.prefix == "x-"
    assert callable(parser.parse_args(["topics", "apply"]).func)
