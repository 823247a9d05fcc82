"""`pipeline kafka start|status|stop` on a second broker of its own (own folder, free ports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import BrokerError
from pipeline.local import broker
from pipeline.operations.admin import check_broker
from pipeline.settings import Settings
from tests.net import free_port


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings.of(
        kafka_dir=tmp_path / "kafka", kafka_port=free_port(), kafka_controller_port=free_port(), kafka_heap="512m"
    )
    if broker.kafka_version(broker.paths(settings)) is None:
        pytest.fail("no Kafka jars: run `make setup`", pytrace=False)
    yield settings
    broker.stop(settings)


def test_start_is_idempotent_and_stop_is_clean(local: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [
        "--port",
        str(local.broker.kafka_port),
        "--controller-port",
        str(local.broker.kafka_controller_port),
        "--dir",
        str(local.broker.kafka_dir),
        "--heap",
        local.broker.kafka_heap,
    ]
    assert main(["kafka", "status", *flags]) == 1
    assert main(["kafka", "start", *flags]) == 0
    out = capsys.readouterr().out
    assert "formatting new KRaft storage" in out
    assert f"log: {broker.paths(local).log}" in out

    check_broker(local.replace(bootstrap_servers=broker.address(local)))
    state = broker.status(local)
    assert state.up and state.pid is not None

    assert main(["kafka", "start", *flags]) == 0
    assert "already running" in capsys.readouterr().out
    assert broker.status(local).pid == state.pid

    assert main(["kafka", "status", *flags]) == 0
    assert main(["kafka", "stop", *flags]) == 0
    assert f"stopped (pid {state.pid})" in capsys.readouterr().out
    assert main(["kafka", "status", *flags]) == 1
    with pytest.raises(BrokerError):
        check_broker(local.replace(bootstrap_servers=broker.address(local)), timeout_s=2)
    assert "shut down" in broker.paths(local).log.read_text()

    # Its data survives: a restart needs no format and keeps the cluster id.
    cluster = broker.paths(local).cluster.read_text()
    assert main(["kafka", "start", *flags]) == 0
    assert "formatting" not in capsys.readouterr().out
    assert broker.paths(local).cluster.read_text() == cluster
