"""ops/k8s and ops/grafana: valid, up to date with the stage map, and only naming real settings and metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

import pipeline.runtime.metrics as metrics
from pipeline.cli import build_parser
from pipeline.commands.k8s import render
from pipeline.flow import STAGE_NAMES, STAGES
from pipeline.settings import PROJECT_ROOT, Settings, setting_fields
from pipeline.topics import load_topics

MANIFEST = PROJECT_ROOT / "ops" / "k8s" / "pipeline.yaml"
DASHBOARD = PROJECT_ROOT / "ops" / "grafana" / "pipeline-dashboard.json"
MONITOR_STATE = PROJECT_ROOT / "pipeline" / "monitor" / "state.py"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def kind(docs: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == name}


def test_the_committed_manifests_are_what_the_stage_map_makes() -> None:
    assert MANIFEST.read_text() == render(), "run: pipeline k8s > ops/k8s/pipeline.yaml"


def test_each_stage_has_a_workload_a_budget_and_a_scaler(docs: list[dict[str, Any]]) -> None:
    for k in ("StatefulSet", "PodDisruptionBudget", "ScaledObject"):
        assert set(kind(docs, k)) == {f"pipeline-{s}" for s in STAGE_NAMES}, k
    assert "pipeline-settings" in kind(docs, "ConfigMap") and "pipeline-topics" in kind(docs, "Job")


def test_each_workload_runs_its_own_stage_with_a_stable_member_id_and_health_probes(docs: list[dict[str, Any]]) -> None:
    for stage in STAGE_NAMES:
        [container] = kind(docs, "StatefulSet")[f"pipeline-{stage}"]["spec"]["template"]["spec"]["containers"]
        args = build_parser().parse_args(container["command"][1:])
        assert args.command == "run" and args.stage == stage
        env = {e["name"]: e for e in container["env"]}
        assert env["PIPELINE_MEMBER"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        for probe in (container["livenessProbe"], container["readinessProbe"]):
            health = build_parser().parse_args(probe["exec"]["command"][1:])
            assert health.command == "health" and health.file == env["PIPELINE_HEALTH_FILE"]["value"]


def test_scalers_never_exceed_the_partitions_of_the_stage_source(docs: list[dict[str, Any]]) -> None:
    partitions = {name: spec.partitions for name, spec in load_topics(Settings()).items()}
    for stage in STAGES:
        scaler = kind(docs, "ScaledObject")[f"pipeline-{stage.name}"]["spec"]
        assert 1 <= scaler["minReplicaCount"] <= scaler["maxReplicaCount"] <= partitions[stage.source]
        lag, advice = scaler["triggers"]
        assert lag["type"] == "kafka" and lag["metadata"]["allowIdleConsumers"] == "false"
        assert lag["metadata"]["consumerGroup"] == stage.name and lag["metadata"]["topic"] == stage.source
        # The monitor's advice for this stage, one replica per advised member.
        assert advice["type"] == "metrics-api" and advice["metadata"]["valueLocation"] == f"{stage.name}.members"
        assert (
            advice["metadata"]["url"].startswith("http://pipeline-monitor:6066/")
            and advice["metadata"]["targetValue"] == "1"
        )


def test_every_pipeline_variable_in_the_manifests_is_a_setting(docs: list[dict[str, Any]]) -> None:
    fields = set(setting_fields())
    names = set(re.findall(r"PIPELINE_[A-Z_]+", MANIFEST.read_text()))
    assert names and not sorted(n for n in names if n.removeprefix("PIPELINE_").lower() not in fields)


def test_the_dashboard_only_queries_metrics_the_members_export() -> None:
    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    # ... and the monitor's gauges (pipeline/monitor/state.py).
    exported |= set(re.findall(r'"(pipeline_(?:monitor|scaling)_[a-z0-9_]+)"', MONITOR_STATE.read_text()))
    dashboard = json.loads(DASHBOARD.read_text())
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"pipeline_[a-z0-9_]+", target["expr"])}  # fmt: skip
    # prometheus-client strips _total from a Counter's name
    assert used and not {u.removesuffix("_total") for u in used} - exported, sorted(used)


def test_the_monitor_runs_once_behind_a_service_with_probes_on_its_web_port(docs: list[dict[str, Any]]) -> None:
    deployment = kind(docs, "Deployment")["pipeline-monitor"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    [container] = deployment["template"]["spec"]["containers"]
    assert build_parser().parse_args(container["command"][1:]).command == "monitor"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert {e["name"]: e["value"] for e in container["env"]}["PIPELINE_MONITOR_PORT"] == str(port)
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    service = kind(docs, "Service")["pipeline-monitor"]["spec"]
    assert service["ports"][0]["port"] == port and service["selector"] == {"pipeline/stage": "monitor"}
