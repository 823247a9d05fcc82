"""docker-compose.yml: the services exist, their commands parse, their settings exist.

No Docker engine is needed: the file is read as YAML and checked against the
``pipeline`` command and :class:`~pipeline.settings.Settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.settings import PROJECT_ROOT, setting_fields

STAGES = ("filter", "split", "infer", "merge", "generate")
COMPOSE = PROJECT_ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_services_are_the_broker_the_topics_job_and_one_per_stage(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "topics", "prometheus", "grafana", "monitor", *STAGES}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["topics"]["command"] == ["pipeline", "topics", "apply"]


def test_kafka_is_a_single_kraft_node_with_replication_factor_one(services: dict[str, Any]) -> None:
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert str(env["KAFKA_NODE_ID"]) == "1"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
    ):
        assert str(env[key]) == "1", key
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_service_runs_its_stage_after_topics(services: dict[str, Any], stage: str) -> None:
    service = services[stage]
    assert service["command"] == ["pipeline", "run", stage]
    assert service["build"] == "."
    assert service["environment"]["PIPELINE_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    # A fixed container name would stop `docker compose up --scale STAGE=N`.
    assert "container_name" not in service


@pytest.mark.parametrize("stage", STAGES)
def test_stage_command_parses(services: dict[str, Any], stage: str) -> None:
    args = build_parser().parse_args(services[stage]["command"][1:])
    assert args.command == "run" and args.stage == stage
    assert callable(args.func)


def test_stage_services_are_the_stages_of_the_flow() -> None:
    flow = pytest.importorskip("pipeline.flow")
    assert tuple(flow.STAGE_NAMES) == STAGES


def test_every_pipeline_variable_is_a_setting(services: dict[str, Any]) -> None:
    fields = set(setting_fields())
    names = {
        name
        for service in services.values()
        for name in (service.get("environment") or {})
        if name.startswith("PIPELINE_")
    }
    names |= _dockerfile_env(PROJECT_ROOT / "Dockerfile")
    assert names, "expected PIPELINE_* variables in docker-compose.yml"
    unknown = sorted(n for n in names if n.removeprefix("PIPELINE_").lower() not in fields)
    assert not unknown, f"not Settings fields: {unknown}"


def _dockerfile_env(path: Path) -> set[str]:
    words = path.read_text().replace("\\\n", " ").split()
    return {w.split("=", 1)[0] for w in words if w.startswith("PIPELINE_") and "=" in w}


def test_the_monitor_service_runs_the_monitor_on_its_port(services: dict[str, Any]) -> None:
    monitor = services["monitor"]
    args = build_parser().parse_args(monitor["command"][1:])
    assert args.command == "monitor" and callable(args.func)
    port = monitor["environment"]["PIPELINE_MONITOR_PORT"]
    assert f"{port}:{port}" in monitor["ports"]
    scrape = yaml.safe_load((PROJECT_ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]]
    assert f"monitor:{port}" in targets
