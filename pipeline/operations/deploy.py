"""Kubernetes manifests made from the map: one StatefulSet, budget and autoscaler per stage of ``flow.STAGES``.

``pipeline k8s > ops/k8s/pipeline.yaml`` writes them; a test checks that the
committed file is what this makes, so the manifests can never drift from the
stages, their topics or their settings. Per stage:

* a **StatefulSet**: stable pod names (``pipeline-infer-0``, ...) become the
  member id, so a restarted pod keeps its static group membership and its
  transactional id (fencing what its predecessor left open); settings come
  from the ``pipeline-settings`` ConfigMap (and the ``pipeline-kafka`` Secret
  for credentials); liveness and readiness probes run ``pipeline health`` on
  the member's health file; Prometheus scrapes ``/metrics`` on port 9100;
* a **PodDisruptionBudget**: voluntary evictions take one member at a time;
* a KEDA **ScaledObject** between one member and the source topic's
  partition count (more members would sit idle), with two triggers (the
  larger wins): the group's lag (KEDA's kafka scaler), and the monitor's
  scaling advice (``/api/advice``, which weighs arrival rate, lag, time to
  drain and the downstream backlog).

Plus the ``pipeline-topics`` Job that applies ``topics/``, and the monitor
(``pipeline monitor``): one Deployment (one instance: it reads the telemetry
topic whole) and its Service, scraped by Prometheus on ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from pipeline.flow import STAGES, Stage
from pipeline.settings import Settings
from pipeline.topics import load_topics

IMAGE = "kafka-inference-pipeline:latest"
METRICS_PORT = 9100
MONITOR_PORT = 6066
MONITOR_URL = f"http://pipeline-monitor:{MONITOR_PORT}"
HEALTH_FILE = "/tmp/pipeline-health.json"
# Records waiting per member before KEDA adds one (the kafka scaler's lagThreshold).
LAG_PER_MEMBER = {"infer": 200, "generate": 8}
DEFAULT_LAG_PER_MEMBER = 500
# What a member of each stage asks for: the model stages hold ONNX sessions.
RESOURCES = {
    "infer": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "3Gi"}},
    "generate": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "split": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
}
DEFAULT_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}

CONFIG: dict[str, str] = {
    "PIPELINE_BOOTSTRAP_SERVERS": "kafka-bootstrap.kafka.svc:9092",
    "PIPELINE_PROCESSING_GUARANTEE": "exactly_once",
    "PIPELINE_MODEL_CACHE_DIR": "/cache/models",
    "PIPELINE_LOG_LEVEL": "INFO",
}


def manifests(settings: Settings) -> list[dict[str, Any]]:
    """Every Kubernetes object of the pipeline, in apply order."""
    partitions = {name: spec.partitions for name, spec in load_topics(settings).items()}
    docs: list[dict[str, Any]] = [_config_map(), _topics_job()]
    for stage in STAGES:
        docs += [_stateful_set(stage), _budget(stage), _scaler(stage, partitions[stage.source], settings)]
    docs += [_monitor(), _monitor_service()]
    return docs


def _meta(name: str, stage: str | None = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "pipeline", **({"pipeline/stage": stage} if stage else {})}
    return {"name": name, "labels": labels}


def _config_map() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("pipeline-settings"), "data": dict(CONFIG)}


def _env_from() -> list[dict[str, Any]]:
    # Credentials (PIPELINE_SASL_*) live in a Secret of their own, never in the ConfigMap.
    return [{"configMapRef": {"name": "pipeline-settings"}},
            {"secretRef": {"name": "pipeline-kafka", "optional": True}}]  # fmt: skip


def _topics_job() -> dict[str, Any]:
    container = {"name": "topics", "image": IMAGE, "command": ["pipeline", "topics", "apply"], "envFrom": _env_from()}
    spec = {"backoffLimit": 10, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [container]}}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta("pipeline-topics"), "spec": spec}


def _probe(max_age_s: int, period_s: int) -> dict[str, Any]:
    command = ["pipeline", "health", HEALTH_FILE, "--max-age", str(max_age_s)]
    return {"exec": {"command": command}, "periodSeconds": period_s, "failureThreshold": 3}


def _stateful_set(stage: Stage) -> dict[str, Any]:
    name = f"pipeline-{stage.name}"
    env = [
        # The pod's stable name is the member id: static membership and transactional id.
        {"name": "PIPELINE_MEMBER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PIPELINE_HEALTH_FILE", "value": HEALTH_FILE},
        {"name": "PIPELINE_METRICS_PORT", "value": str(METRICS_PORT)},
    ]
    container = {
        "name": stage.name,
        "image": IMAGE,
        "command": ["pipeline", "run", stage.name],
        "envFrom": _env_from(),
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": RESOURCES.get(stage.name, DEFAULT_RESOURCES),
        # Alive: the loop turned within a minute (its own watchdog ends it sooner).
        "livenessProbe": {**_probe(60, 15), "initialDelaySeconds": 60},
        # Ready: models loaded and the loop turning now.
        "readinessProbe": _probe(10, 5),
        "volumeMounts": [{"name": "model-cache", "mountPath": "/cache"}],
    }
    pod = {
        "metadata": {
            "labels": _meta(name, stage.name)["labels"],
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)},
        },
        "spec": {
            # A member ends itself within PIPELINE_SHUTDOWN_TIMEOUT_S (8 s) of SIGTERM.
            "terminationGracePeriodSeconds": 15,
            "containers": [container],
            "volumes": [{"name": "model-cache", "emptyDir": {}}],
        },
    }
    spec = {
        "serviceName": name,
        "replicas": 1,
        # Members start and stop independently: no reason to wait for each other.
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": {"pipeline/stage": stage.name}},
        "template": pod,
    }
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(name, stage.name), "spec": spec}


def _budget(stage: Stage) -> dict[str, Any]:
    spec = {"maxUnavailable": 1, "selector": {"matchLabels": {"pipeline/stage": stage.name}}}
    meta = _meta(f"pipeline-{stage.name}", stage.name)
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta, "spec": spec}


def _scaler(stage: Stage, partitions: int, settings: Settings) -> dict[str, Any]:
    trigger = {
        "type": "kafka",
        "metadata": {
            "bootstrapServers": CONFIG["PIPELINE_BOOTSTRAP_SERVERS"],
            "consumerGroup": settings.group(stage.name),
            "topic": settings.topic(stage.source),
            "lagThreshold": str(LAG_PER_MEMBER.get(stage.name, DEFAULT_LAG_PER_MEMBER)),
            # Never more members than partitions: the extra ones would sit idle.
            "allowIdleConsumers": "false",
            "offsetResetPolicy": "earliest",
        },
    }
    advice = {
        # The monitor's advice for this stage, as a member count: replicas = value / targetValue.
        "type": "metrics-api",
        "metadata": {
            "url": f"{MONITOR_URL}/api/advice",
            "valueLocation": f"{stage.name}.members",
            "targetValue": "1",
            "format": "json",
        },
    }
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": f"pipeline-{stage.name}"},
        "minReplicaCount": 1,
        "maxReplicaCount": partitions,
        # Longer than a member's start and model load, so one step shows before the next.
        "cooldownPeriod": 300,
        "pollingInterval": 15,
        "triggers": [trigger, advice],
    }
    meta = _meta(f"pipeline-{stage.name}", stage.name)
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta, "spec": spec}


def _monitor() -> dict[str, Any]:
    probe = {"httpGet": {"path": "/api/advice", "port": "http"}, "periodSeconds": 15, "failureThreshold": 4}
    container = {
        "name": "monitor",
        "image": IMAGE,
        "command": ["pipeline", "monitor"],
        "envFrom": _env_from(),
        "env": [{"name": "PIPELINE_MONITOR_PORT", "value": str(MONITOR_PORT)}],
        "ports": [{"name": "http", "containerPort": MONITOR_PORT}],
        "resources": DEFAULT_RESOURCES,
        "livenessProbe": {**probe, "initialDelaySeconds": 60},
        "readinessProbe": probe,
    }
    pod = {
        "metadata": {
            "labels": _meta("pipeline-monitor", "monitor")["labels"],
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(MONITOR_PORT),
                            "prometheus.io/path": "/metrics"},
        },
        "spec": {"containers": [container]},
    }  # fmt: skip
    spec = {
        "replicas": 1,
        # One instance at a time: it reads the one-partition telemetry topic whole.
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": {"pipeline/stage": "monitor"}},
        "template": pod,
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("pipeline-monitor", "monitor"),
            "spec": spec}  # fmt: skip


def _monitor_service() -> dict[str, Any]:
    spec = {"selector": {"pipeline/stage": "monitor"},
            "ports": [{"name": "http", "port": MONITOR_PORT, "targetPort": "http"}]}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta("pipeline-monitor", "monitor"), "spec": spec}
