"""docker-compose.secure.yml: secrets as files, every stage its own principal, the broker as the local secure one.

No Docker engine is needed: the file is read as YAML and checked against the
``pipeline`` command, Settings, ``pipeline kafka secrets`` and the secure
broker configuration the integration tests run (pipeline/local/secure.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.flow import STAGE_NAMES
from pipeline.local.secure import deploy_secrets, listener_lines
from pipeline.operations.acls import roles
from pipeline.settings import PROJECT_ROOT, Settings, setting_fields

SECURE = PROJECT_ROOT / "docker-compose.secure.yml"
FOLDER = ".cache/compose-secure/"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(SECURE.read_text())


def _property(env_name: str) -> str:
    """The apache/kafka image's rule: KAFKA_A_B__C___D is a.b_c-d."""
    name = env_name.removeprefix("KAFKA_").replace("___", "-").replace("__", "\0").replace("_", ".")
    return name.replace("\0", "_").lower()


@pytest.mark.parametrize("stage", [*STAGE_NAMES, "monitor"])
def test_each_stage_logs_in_as_itself_with_its_own_password_file(compose: dict[str, Any], stage: str) -> None:
    # The monitor too: `pipeline monitor` with no user is the monitor principal (pipeline/monitor/auth.py).
    service = compose["services"][stage]
    env = service["environment"]
    assert env["PIPELINE_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "PIPELINE_SASL_USERNAME" not in env  # pipeline run STAGE / pipeline monitor: its own principal
    assert env["PIPELINE_SASL_PASSWORD_FILE"] == "/run/secrets/password"
    assert {"source": f"{stage}_password", "target": "password"} in service["secrets"]
    assert compose["secrets"][f"{stage}_password"]["file"] == f"{FOLDER}secrets/{stage}"


def test_no_password_is_written_in_the_file(compose: dict[str, Any]) -> None:
    text = SECURE.read_text()
    assert "PIPELINE_SASL_PASSWORD:" not in text
    for key, value in compose["services"]["kafka"]["environment"].items():
        if "PASSWORD" in key or "JAAS" in key:
            assert "${file:/run/secrets/kafka_passwords:" in str(value), key


def test_every_secret_is_a_file_pipeline_kafka_secrets_makes(compose: dict[str, Any], tmp_path: Path) -> None:
    made = deploy_secrets(tmp_path, "kafka", list(roles(Settings())))
    relative = {str(p.relative_to(tmp_path)) for p in made}
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith(FOLDER), name
        assert secret["file"].removeprefix(FOLDER) in relative, name
    properties = (tmp_path / "secrets" / "kafka-passwords.properties").read_text()
    assert re.fullmatch(r"store=\S+\nbroker=\S+\n", properties)


def test_the_broker_is_configured_as_the_tested_local_secure_broker(compose: dict[str, Any], tmp_path: Path) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    env = {_property(k): str(v) for k, v in kafka.items() if k.startswith("KAFKA_")}
    local = dict(line.split("=", 1) for line in listener_lines(Settings.of(kafka_dir=tmp_path)) if "=" in line)
    for key in (
        "authorizer.class.name",
        "allow.everyone.if.no.acl.found",
        "super.users",
        "sasl.enabled.mechanisms",
        "sasl.mechanism.inter.broker.protocol",
        "listener.name.controller.ssl.client.auth",
        "ssl.principal.mapping.rules",
        "ssl.keystore.type",
    ):
        assert env[key].replace("$$", "$") == local[key], key
    assert "listener.name.internal.scram-sha-512.sasl.jaas.config" in env
    assert "PLAINTEXT" not in env["listener.security.protocol.map"]


def test_the_topics_job_applies_acls_and_makes_users_as_admin(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["environment"]["PIPELINE_SASL_USERNAME"] == "admin"
    args = build_parser().parse_args(topics["command"][1:])
    assert args.topics_command == "apply" and args.users == Path("/run/secrets/pipeline_users")
    fields = set(setting_fields())
    for service in compose["services"].values():
        for name in service.get("environment") or {}:
            if name.startswith("PIPELINE_"):
                assert name.removeprefix("PIPELINE_").lower() in fields, name
