"""The monitor's TLS and SASL (pipeline/monitor/auth.py): from the settings every client uses, no password shown."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import faust
import pytest

from pipeline.local.tls import TlsFiles, ensure_tls
from pipeline.monitor.app import build_app
from pipeline.monitor.auth import as_monitor, credentials
from pipeline.operations.acls import bindings
from pipeline.settings import Settings

SECRET = "m0n1t0r-secret-never-printed"


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = TlsFiles(tmp_path_factory.mktemp("tls"))
    ensure_tls(files, "127.0.0.1")  # the local secure broker's CA (keytool)
    return files.ca_pem


def _secure(ca_pem: Path, tmp_path: Path, **changes: str) -> Settings:
    users = tmp_path / "secrets"
    users.mkdir(exist_ok=True)
    (users / "p-monitor").write_text(SECRET + "\n")
    base = Settings.of(prefix="p-", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                    sasl_password_file=str(users), ssl_ca_location=str(ca_pem))  # fmt: skip
    return as_monitor(base).replace(**changes)


def test_sasl_ssl_credentials_come_from_settings_and_the_password_file(ca_pem: Path, tmp_path: Path) -> None:
    settings = _secure(ca_pem, tmp_path)
    assert (
        settings.security.sasl_username == "p-monitor"
    )  # no user set: the monitor principal, like `pipeline run STAGE`
    found = credentials(settings)
    assert isinstance(found, faust.SASLCredentials)
    assert (found.username, found.password) == ("p-monitor", SECRET)
    assert (found.protocol.value, found.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert found.ssl_context is not None and found.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert found.ssl_context.check_hostname
    # It trusts the CA of PIPELINE_SSL_CA_LOCATION (the broker's), as librdkafka's ssl.ca.location does.
    # (a context made with cafile= loads that file only: the one CA).
    assert len(found.ssl_context.get_ca_certs()) == 1
    assert SECRET not in repr(found)


def test_a_user_that_is_set_is_kept(ca_pem: Path, tmp_path: Path) -> None:
    settings = as_monitor(_secure(ca_pem, tmp_path).replace(sasl_username="ops"))
    assert settings.security.sasl_username == "ops"
    assert as_monitor(Settings()).security.sasl_username == ""  # PLAINTEXT: nobody to be


def test_other_protocols(ca_pem: Path, tmp_path: Path) -> None:
    assert credentials(Settings()) is None
    tls_only = credentials(Settings.of(security_protocol="SSL", ssl_ca_location=str(ca_pem)))
    assert isinstance(tls_only, faust.SSLCredentials) and tls_only.protocol.value == "SSL"
    assert len(tls_only.context.get_ca_certs()) == 1
    plain = credentials(_secure(ca_pem, tmp_path, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN"))
    assert isinstance(plain, faust.SASLCredentials) and plain.ssl_context is None
    assert (plain.protocol.value, plain.mechanism.value) == ("SASL_PLAINTEXT", "PLAIN")
    # librdkafka's "probe" (and empty): the system's CAs, not a file named probe.
    probing = credentials(_secure(ca_pem, tmp_path, ssl_ca_location="probe"))
    assert isinstance(probing, faust.SASLCredentials) and probing.ssl_context is not None


def test_the_app_connects_with_them_and_never_shows_the_password(
    ca_pem: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _secure(ca_pem, tmp_path)
    with caplog.at_level(logging.DEBUG):
        app = build_app(settings)
    given = app.conf.broker_credentials
    assert isinstance(given, faust.SASLCredentials) and given.username == "p-monitor"
    assert SECRET not in repr(given) and SECRET not in repr(settings) and SECRET not in caplog.text
    assert build_app(Settings()).conf.broker_credentials is None


def test_every_topic_faust_makes_is_covered_by_the_monitors_prefixed_acls(ca_pem: Path, tmp_path: Path) -> None:
    settings = _secure(ca_pem, tmp_path)
    app = build_app(settings)
    made = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    made.append(f"{app.conf.id}-__assignor-__leader")  # faust's LeaderAssignor topic
    assert len(made) == 5  # two windowed tables, their key indexes, the leader topic
    monitor = [a for a in bindings(settings) if a.principal == "User:p-monitor" and a.resource == "topic"]
    for operation in ("create", "read", "write"):
        covering = [a.name for a in monitor if a.operation == operation and a.prefixed]
        assert all(any(t.startswith(p) for p in covering) for t in made), (operation, made, covering)
    assert app.conf.id == settings.group("monitor")
    assert any(a.name == "p-monitor" and a.operation == "read" for a in bindings(settings) if a.resource == "group")
