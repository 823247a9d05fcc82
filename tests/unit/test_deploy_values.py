"""Deployment files: every value they set makes valid Settings, every ``pipeline`` command they run parses.

test_compose.py, test_compose_secure.py and test_k8s.py check that the
``PIPELINE_*`` names are Settings fields and that each stage runs its stage.
These check what those leave out: a value Settings refuses (a port that is
not a number, a protocol librdkafka does not know) fails a member only when
it starts, and a health check naming a command or file that does not exist
marks every container unhealthy. Each container's environment is built the
way it will be at run time (the image's ENV, then compose's files in order,
or the ConfigMap then the container's own env) and given to
``Settings.from_env``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.errors import ConfigError
from pipeline.settings import PROJECT_ROOT, Settings

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
SECURE = PROJECT_ROOT / "docker-compose.secure.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
MANIFEST = PROJECT_ROOT / "ops" / "k8s" / "pipeline.yaml"


def dockerfile_env(text: str) -> dict[str, str]:
    """The image's ``ENV`` pairs (``ENV A=1 \\ B=2``)."""
    env: dict[str, str] = {}
    for statement in text.replace("\\\n", " ").splitlines():
        words = statement.split()
        if words[:1] == ["ENV"]:
            env.update(w.split("=", 1) for w in words[1:] if "=" in w)
    return env


def dockerfile_cmd(text: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith("CMD ")]
    return list(yaml.safe_load(line.removeprefix("CMD ")))


def compose_services(*texts: str) -> dict[str, dict[str, Any]]:
    """Services of compose files layered in order: later files' keys win, environments merge."""
    merged: dict[str, dict[str, Any]] = {}
    for text in texts:
        for name, service in yaml.safe_load(text)["services"].items():
            base = merged.setdefault(name, {})
            env = {**(base.get("environment") or {}), **(service.get("environment") or {})}
            base.update(service)
            base["environment"] = env
    return merged


def pipeline_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image (the broker, Prometheus and Grafana do not)."""
    return {name: s for name, s in services.items() if s.get("build") == "."}


def container_env(image_env: dict[str, str], env: dict[str, Any]) -> dict[str, str]:
    """What a process in the container sees: compose allows strings and numbers only."""
    for key, value in env.items():
        assert isinstance(value, str | int | float) and not isinstance(value, bool), f"{key}: {value!r}"
    return {**image_env, **{k: str(v) for k, v in env.items()}}


def check_settings(where: str, env: dict[str, str]) -> None:
    try:
        Settings.from_env({k: v for k, v in env.items() if k.startswith("PIPELINE_")})
    except ConfigError as exc:
        pytest.fail(f"{where}: {exc}")


def check_command(where: str, command: list[str]) -> Any:
    """Parse a ``pipeline …`` command line; the parsed arguments (None for ``--help``)."""
    assert command[0] == "pipeline", f"{where}: {command}"
    try:
        return build_parser().parse_args([str(word) for word in command[1:]])
    except SystemExit as exc:
        if exc.code == 0 and "--help" in command:
            return None
        pytest.fail(f"{where}: the CLI refuses {command}")


def healthcheck_command(service: dict[str, Any]) -> list[str] | None:
    test = (service.get("healthcheck") or {}).get("test")
    return list(test[1:]) if test and test[0] == "CMD" and test[1] == "pipeline" else None


def check_compose(services: dict[str, dict[str, Any]], image_env: dict[str, str], label: str) -> None:
    runs = pipeline_services(services)
    assert runs, f"{label}: no service runs the project's image"
    for name, service in runs.items():
        env = container_env(image_env, service.get("environment") or {})
        check_settings(f"{label} {name}", env)
        check_command(f"{label} {name}", service["command"])
        health = healthcheck_command(service)
        if health is not None:
            args = check_command(f"{label} {name} healthcheck", health)
            assert args.command == "health", f"{label} {name}: {health}"
            assert str(args.file) == env.get("PIPELINE_HEALTH_FILE"), f"{label} {name}: checks a file it never writes"


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    return dockerfile_env(DOCKERFILE.read_text())


def test_the_image_sets_valid_settings_and_its_default_command_exists(image_env: dict[str, str]) -> None:
    assert image_env
    check_settings("Dockerfile", image_env)
    check_command("Dockerfile CMD", dockerfile_cmd(DOCKERFILE.read_text()))


def test_every_compose_service_gets_valid_settings_and_runs_real_commands(image_env: dict[str, str]) -> None:
    check_compose(compose_services(COMPOSE.read_text()), image_env, "docker-compose.yml")


def test_the_secure_layer_over_the_plain_file_gets_valid_settings_and_runs_real_commands(
    image_env: dict[str, str],
) -> None:
    services = compose_services(COMPOSE.read_text(), SECURE.read_text())
    check_compose(services, image_env, "docker-compose.yml + docker-compose.secure.yml")
    for name, service in pipeline_services(services).items():
        assert service["environment"]["PIPELINE_SECURITY_PROTOCOL"] == "SASL_SSL", name


def test_every_kubernetes_container_gets_valid_settings_and_runs_real_commands(image_env: dict[str, str]) -> None:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    containers = [
        (f"{d['kind']} {d['metadata']['name']}", c)
        for d in docs
        if d["kind"] in ("Job", "StatefulSet", "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert containers
    for where, container in containers:
        env = dict(image_env)
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(maps[source["configMapRef"]["name"]])
        # valueFrom (the pod name as PIPELINE_MEMBER) is only known in the cluster: any string will do.
        env.update({e["name"]: e.get("value", "pod-0") for e in container.get("env", [])})
        check_settings(where, {k: str(v) for k, v in env.items()})
        check_command(where, container["command"])
        for probe in ("livenessProbe", "readinessProbe"):
            command = container.get(probe, {}).get("exec", {}).get("command")
            if command:
                check_command(f"{where} {probe}", command)


BROKEN = [
    ('PIPELINE_METRICS_PORT: "9100"', 'PIPELINE_METRICS_PORT: "91OO"'),
    ('["CMD", "pipeline", "health"', '["CMD", "pipeline", "healthz"'),
    ("PIPELINE_HEALTH_FILE: /tmp/pipeline-health.json", "PIPELINE_HEALTH_FILE: /tmp/health.json"),
    ('command: ["pipeline", "run", "infer"]', 'command: ["pipeline", "infer"]'),
]


@pytest.mark.parametrize(("good", "bad"), BROKEN)
def test_a_broken_compose_file_fails_the_check(image_env: dict[str, str], good: str, bad: str) -> None:
    text = COMPOSE.read_text()
    assert good in text
    with pytest.raises((pytest.fail.Exception, AssertionError)):
        check_compose(compose_services(text.replace(good, bad)), image_env, "broken")


def test_a_secure_layer_with_a_mistyped_mechanism_fails_the_check(image_env: dict[str, str]) -> None:
    text = SECURE.read_text().replace("PIPELINE_SASL_MECHANISM: SCRAM-SHA-512", "PIPELINE_SASL_MECHANISM: SCRAM-SHA512")
    with pytest.raises((pytest.fail.Exception, AssertionError)):
        check_compose(compose_services(COMPOSE.read_text(), text), image_env, "broken")


def test_an_image_env_of_an_unknown_setting_fails_the_check() -> None:
    env = dockerfile_env("ENV PIPELINE_TOPICS_DIR=/app/topics \\\n    PIPELINE_MODEL_CACHE=/app/.cache/models\n")
    with pytest.raises((pytest.fail.Exception, AssertionError)):
        check_settings("broken Dockerfile", env)


def written_passwords(texts: dict[str, str]) -> list[str]:
    """Every place a deployment file sets PIPELINE_SASL_PASSWORD itself, not through a Secret or a file."""
    found = []
    for where, text in texts.items():
        for doc in yaml.safe_load_all(text) if where.endswith((".yml", ".yaml")) else []:
            for service in ((doc or {}).get("services") or {}).values():
                if "PIPELINE_SASL_PASSWORD" in (service.get("environment") or {}):
                    found.append(f"{where}: a service's environment")
            if (doc or {}).get("kind") == "ConfigMap" and "PIPELINE_SASL_PASSWORD" in (doc.get("data") or {}):
                found.append(f"{where}: ConfigMap {doc['metadata']['name']}")
            for container in ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers", []):
                for env in container.get("env", []):
                    if env["name"] == "PIPELINE_SASL_PASSWORD" and "value" in env:
                        found.append(f"{where}: container {container['name']}")
        if where == "Dockerfile" and "PIPELINE_SASL_PASSWORD" in dockerfile_env(text):
            found.append("Dockerfile: ENV")
    return found


def _deployment_texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in (COMPOSE, SECURE, MANIFEST)} | {"Dockerfile": DOCKERFILE.read_text()}


def test_no_deployment_file_writes_a_password() -> None:
    # Passwords reach a member as a file (compose secrets, a mounted Secret) or from a Secret (envFrom).
    assert not written_passwords(_deployment_texts())


def test_a_password_written_into_a_deployment_file_is_found() -> None:
    texts = _deployment_texts()
    manifest = texts["pipeline.yaml"].replace(
        "  PIPELINE_LOG_LEVEL: INFO", "  PIPELINE_LOG_LEVEL: INFO\n  PIPELINE_SASL_PASSWORD: hunter2"
    )
    compose = texts["docker-compose.yml"].replace(
        "    PIPELINE_METRICS_PORT:", "    PIPELINE_SASL_PASSWORD: hunter2\n    PIPELINE_METRICS_PORT:"
    )
    assert written_passwords({**texts, "pipeline.yaml": manifest})
    assert written_passwords({**texts, "docker-compose.yml": compose})


PROMETHEUS = PROJECT_ROOT / "ops" / "prometheus" / "prometheus.yml"


def scrape_gaps(services: dict[str, dict[str, Any]], scrape: dict[str, Any]) -> list[str]:
    """Compose services serving /metrics that Prometheus does not scrape on their port, and names it scrapes in vain."""
    serving = {
        name: str(s["environment"]["PIPELINE_METRICS_PORT"])
        for name, s in pipeline_services(services).items()
        if str((s.get("environment") or {}).get("PIPELINE_METRICS_PORT", "0")) != "0"
    }
    scraped = {
        name: str(sd["port"])
        for job in scrape["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    return sorted(f"{name}: serves {port}, scraped {scraped.get(name)}" for name, port in serving.items()
                  if scraped.get(name) != port) + sorted(f"{name}: scraped, not served" for name in
                                                         set(scraped) - set(serving))  # fmt: skip


def test_prometheus_scrapes_every_member_that_serves_metrics() -> None:
    services = compose_services(COMPOSE.read_text())
    assert not scrape_gaps(services, yaml.safe_load(PROMETHEUS.read_text()))


def test_a_stage_left_out_of_the_scrape_config_is_found() -> None:
    text = PROMETHEUS.read_text().replace(
        "names: [filter, split, infer, merge, generate]", "names: [filter, split, infer, merge]"
    )
    assert scrape_gaps(compose_services(COMPOSE.read_text()), yaml.safe_load(text)) == [
        "generate: serves 9100, scraped None"
    ]
