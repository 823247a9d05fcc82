"""Security without a broker: settings and secrets, client configs, the secure broker's config, ACLs from the map."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.flow import STAGES
from pipeline.local import broker
from pipeline.local.secure import admin_settings, client_env, scram_format_args, tls_files
from pipeline.local.tls import TlsFiles, ensure_tls, password
from pipeline.operations.acls import Acl, acls_file, bindings, load_acls
from pipeline.runtime.config import common_config, consumer_config, security_config
from pipeline.security import sasl_password
from pipeline.settings import PROJECT_ROOT, Settings

SECRET = "s3cr3t-value-never-printed"


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


# -- settings and secrets -----------------------------------------------------------


def test_the_password_is_in_no_repr_and_no_printable_env() -> None:
    settings = Settings.of(security_protocol="SASL_SSL", sasl_username="split", sasl_password=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    env = settings.to_env()
    assert "PIPELINE_SASL_PASSWORD" not in env and SECRET not in str(env)
    assert env["PIPELINE_SASL_USERNAME"] == "split"
    # Only a child process's own environment carries it, and builds the same Settings from it.
    child = settings.to_env(secrets=True)
    assert child["PIPELINE_SASL_PASSWORD"] == SECRET
    assert Settings.from_env(child) == settings


def test_unknown_protocols_and_mechanisms_are_refused() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_SECURITY_PROTOCOL"):
        Settings.from_env({"PIPELINE_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="PIPELINE_SASL_MECHANISM"):
        Settings.from_env({"PIPELINE_SASL_MECHANISM": "GSSAPI"})


def test_the_password_comes_from_the_setting_a_file_or_a_folder_of_users(tmp_path: Path) -> None:
    sasl = Settings.of(security_protocol="SASL_SSL", sasl_username="merge")
    assert sasl_password(sasl.replace(sasl_password=SECRET).security) == SECRET
    (tmp_path / "one").write_text(SECRET + "\n")
    assert sasl_password(sasl.replace(sasl_password_file=str(tmp_path / "one")).security) == SECRET
    users = tmp_path / "secrets"
    users.mkdir()
    (users / "merge").write_text("merge-password\n")
    assert sasl_password(sasl.replace(sasl_password_file=str(users)).security) == "merge-password"
    # A missing user file names the file, a missing user says how to set one.
    with pytest.raises(ConfigError, match=r"secrets/split"):
        sasl_password(sasl.replace(sasl_username="split", sasl_password_file=str(users)).security)
    with pytest.raises(ConfigError, match="PIPELINE_SASL_USERNAME"):
        sasl_password(sasl.replace(sasl_username="", sasl_password_file=str(users)).security)
    with pytest.raises(ConfigError, match="PIPELINE_SASL_PASSWORD_FILE"):
        sasl_password(sasl.security)


def test_every_client_gets_tls_and_sasl_from_settings(tmp_path: Path) -> None:
    assert security_config(Settings()) == {}
    (tmp_path / "client").write_text(SECRET)
    settings = Settings.of(
        security_protocol="SASL_SSL",
        sasl_username="client",
        sasl_password_file=str(tmp_path),
        ssl_ca_location="/etc/ca.pem",
    )
    config = consumer_config(settings, "g", "c")
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("client", SECRET)
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    # TLS without SASL (client certificates or a TLS-only listener): no credentials asked for.
    tls = common_config(Settings.of(security_protocol="SSL"), "c")
    assert tls["security.protocol"] == "ssl" and "sasl.username" not in tls


# -- the secure local broker --------------------------------------------------------------


def test_the_secure_broker_takes_sasl_ssl_only_and_denies_by_default(tmp_path: Path) -> None:
    settings = Settings.of(kafka_dir=tmp_path, kafka_port=9392, kafka_controller_port=9393, kafka_secure=True)
    text = broker.render_server_properties(settings, tmp_path / "data")
    props = _properties(text)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9392,CONTROLLER://127.0.0.1:9393"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:9392"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:broker;User:admin"
    assert "PLAINTEXT" not in props["listener.security.protocol.map"]
    # The broker's and admin's SCRAM users are made with the storage, from files only the owner reads.
    args = scram_format_args(settings)
    assert args[0] == "--add-scram" and args[1].startswith("SCRAM-SHA-512=[name=broker,password=")
    assert (tmp_path / "secrets" / "admin").stat().st_mode & 0o077 == 0
    plain = _properties(broker.render_server_properties(settings.replace(kafka_secure=False), tmp_path))
    assert plain["listeners"].startswith("PLAINTEXT://") and "authorizer.class.name" not in plain


def test_the_secure_broker_tells_its_clients_how_to_connect(tmp_path: Path) -> None:
    settings = Settings.of(kafka_dir=tmp_path, kafka_port=9392, kafka_controller_port=9393, kafka_secure=True)
    admin = admin_settings(settings.replace(bootstrap_servers="127.0.0.1:9392"))
    assert (admin.security.security_protocol, admin.security.sasl_username) == ("SASL_SSL", "admin")
    assert sasl_password(admin.security) == (tmp_path / "secrets" / "admin").read_text().strip()
    env = client_env(settings)
    assert Settings.from_env(env).security.ssl_ca_location == str(tmp_path / "tls" / "ca.pem")
    assert not any(sasl_password(admin.security) in value for value in env.values())


def test_a_secure_cluster_shares_one_ca_and_password_set_and_replicates_over_sasl_ssl(tmp_path: Path) -> None:
    settings = Settings.of(
        kafka_dir=tmp_path, kafka_port=9392, kafka_controller_port=9393, kafka_secure=True, kafka_brokers=3
    )
    (tmp_path / "cluster.properties").write_text("cluster.id=x\nbrokers=3\nmode=secure\n")
    every = broker.nodes(settings)
    for node in every:
        # A node's folder is node-i; its TLS files and passwords are the cluster's, not a set of its own.
        assert tls_files(node.settings).root == tmp_path.resolve(), node
        props = _properties(broker.render_server_properties(node.settings, tmp_path / "d", node_id=node.id,
                                                            voters=node.voters))  # fmt: skip
        port = node.settings.broker.kafka_port
        assert props["listeners"] == f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}"
        assert props["inter.broker.listener.name"] == "SASL_SSL"
        assert props["controller.quorum.voters"] == "1@127.0.0.1:9393,2@127.0.0.1:9395,3@127.0.0.1:9397"
        assert props["ssl.keystore.location"] == str(tmp_path.resolve() / "tls" / "broker.p12")
        assert props["min.insync.replicas"] == "2"
    # One broker password for all: replication between nodes authenticates as the same user.
    assert len({password(tls_files(node.settings), "broker") for node in every}) == 1
    assert not (tmp_path / "node-1" / "secrets").exists()
    env = client_env(settings)
    assert env["PIPELINE_BOOTSTRAP_SERVERS"] == "127.0.0.1:9392,127.0.0.1:9394,127.0.0.1:9396"
    assert env["PIPELINE_KAFKA_BROKERS"] == "3"


@pytest.mark.skipif(
    shutil.which("keytool") is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="keytool comes with Java (in CI, which runs the broker, this test runs)",
)
def test_keytool_makes_a_ca_and_a_broker_certificate_once(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path)
    assert ensure_tls(files, "kafka.internal")
    assert files.ca_pem.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert files.keystore.stat().st_size > 0 and files.truststore.stat().st_size > 0
    assert not ensure_tls(files, "kafka.internal")  # already there: kept


# -- ACLs from the map ---------------------------------------------------------------------


def _of(acls: list[Acl], role: str, settings: Settings) -> list[Acl]:
    return [a for a in acls if a.principal == f"User:{settings.principal(role)}"]


def test_each_stage_reads_its_source_and_group_writes_its_sinks_and_nothing_else() -> None:
    settings = Settings.of(prefix="p-")
    acls = bindings(settings)
    watches = load_acls(settings).watches
    for stage in STAGES:
        mine = _of(acls, stage.name, settings)
        reads = {a.name for a in mine if a.resource == "topic" and a.operation == "read"}
        writes = {a.name for a in mine if a.resource == "topic" and a.operation == "write"}
        watched = [s for s in STAGES if s.name in watches.get(stage.name, ())]
        expected_reads = {stage.source, *(t for t in (stage.follows, stage.changelog) if t)}
        expected_reads |= {s.source for s in watched}  # the queues it watches (filter's shedding probe)
        assert reads == {settings.topic(t) for t in expected_reads}, stage.name
        assert {settings.topic(t) for t in stage.sinks} <= writes, stage.name
        groups = {(a.name, a.operation) for a in mine if a.resource == "group"}
        own = {settings.group(stage.name), *([f"p-{stage.name}-restore"] if stage.changelog else [])}
        assert groups == {(g, "read") for g in own} | {(settings.group(s.name), "describe") for s in watched}
        [txn] = [a for a in mine if a.resource == "transactional_id"]
        assert (txn.name, txn.prefixed, txn.operation) == (f"p-{stage.name}-", True, "write")
        # Each member's transactional id is covered by its stage's prefix.
        assert settings.replace(member="3").client_id(stage.name).startswith(txn.name)


def test_filter_may_read_the_queues_its_shedding_probe_watches_and_nothing_more() -> None:
    """The probe (pipeline/runtime/queue_age.py) reads each later stage's source and that stage's committed offsets.

    The ACLs come from ``watches`` in topics/acls/principals.toml; the stages
    the probe reads are ``queue_wait.DOWNSTREAM``. If either changes alone, this fails.
    """
    from pipeline.flow import stage
    from pipeline.stages.filter.queue_wait import DOWNSTREAM

    settings = Settings.of(prefix="p-")
    watches = {name: stages for name, stages in load_acls(settings).watches.items() if stages}
    assert watches == {"filter": tuple(name for name, _ in DOWNSTREAM)}
    assert all(stage(name).source == source for name, source in DOWNSTREAM), "the probe reads each stage's source"
    filter_ = {(a.operation, a.resource, a.name) for a in _of(bindings(settings), "filter", settings)}
    for name, source in DOWNSTREAM:
        assert ("read", "topic", f"p-{source}") in filter_
        assert ("describe", "group", f"p-{name}") in filter_  # OffsetFetch: DESCRIBE, not READ
        assert ("read", "group", f"p-{name}") not in filter_  # may not join nor commit there
    # Nothing else of theirs: no writes to their sinks that are not filter's own.
    assert ("write", "topic", "p-parts") not in filter_ and ("write", "topic", "p-results") not in filter_


def test_split_may_not_read_answers_nor_write_requests_and_clients_have_no_group() -> None:
    settings = Settings()
    acls = bindings(settings)
    split = {(a.operation, a.resource, a.name) for a in _of(acls, "split", settings)}
    assert ("read", "topic", "answers") not in split and ("write", "topic", "requests") not in split
    client = {(a.operation, a.resource, a.name) for a in _of(acls, "client", settings)}
    assert client == {
        ("write", "topic", "requests"),
        ("read", "topic", "answers"),
        ("read", "topic", "answer-chunks"),
    }
    # Prefixed patterns only for transactional ids and the topics faust makes for the monitor.
    prefixed = {(a.principal, a.resource, a.name) for a in acls if a.prefixed and a.resource != "transactional_id"}
    assert prefixed == {("User:monitor", "topic", "monitor-")}


def test_every_stage_may_write_telemetry_and_the_monitor_may_read_it_and_run_faust() -> None:
    settings = Settings.of(prefix="p-")
    acls = bindings(settings)
    for stage in STAGES:
        assert Acl(f"User:p-{stage.name}", "topic", "p-telemetry", False, "write") in acls, stage.name
    monitor = {(a.operation, a.resource, a.name, a.prefixed) for a in _of(acls, "monitor", settings)}
    assert ("read", "topic", "p-telemetry", False) in monitor
    assert ("read", "group", "p-monitor", False) in monitor  # faust's app id is its group
    for operation in ("create", "read", "write", "describe_configs"):  # faust's topics, made by ensure_topics
        assert (operation, "topic", "p-monitor-", True) in monitor, operation
    # Nothing it writes outside its own topics, and no stage's group beyond describing it.
    assert {a[2] for a in monitor if a[0] in ("write", "create")} == {"p-monitor-"}
    assert {a[2] for a in monitor if a[1] == "group" and a[0] != "describe"} == {"p-monitor"}


def test_generate_may_write_every_topic_it_writes_and_read_only_its_own() -> None:
    """generate may write every topic it writes (committed, streamed, side-sent, telemetry) and read only its own.

    Written out here rather than derived from the map: a right lost from the map
    or from topics/acls/ (say WRITE on answer-chunks, which streams every reply)
    fails this test, not a chat in production.
    """
    settings = Settings.of(prefix="p-")
    mine = _of(bindings(settings), "generate", settings)
    topics = {(a.operation, a.name) for a in mine if a.resource == "topic"}
    writes = {"answers", "answer-chunks", "answer-cache", "sessions", "dead-letters", "prompts", "telemetry"}
    assert {name for op, name in topics if op == "write"} == {f"p-{t}" for t in writes}
    # Its source, and its sessions' changelog (restored when a partition is assigned): nobody else's topic.
    assert {name for op, name in topics if op == "read"} == {"p-prompts", "p-sessions"}
    assert {op for op, _ in topics} == {"read", "write"}, "no other operation on any topic"
    groups = {(a.operation, a.name, a.prefixed) for a in mine if a.resource != "topic"}
    assert groups == {("read", "p-generate", False), ("read", "p-generate-restore", False),
                      ("write", "p-generate-", True)}  # fmt: skip
    # Every topic the stage's modules write is among them, and the side producer's session expiries too.
    folder = PROJECT_ROOT / "pipeline" / "stages" / "generate"
    written = {t for m in folder.glob("*.py") for t in re.findall(r'Output\(\s*"([a-z-]+)"', m.read_text())}
    assert {"answer-chunks", "answer-cache", "prompts"} <= written <= writes


def test_every_topic_a_stage_module_writes_is_allowed_to_its_stage() -> None:
    """A stage that starts writing a new topic fails here, not with an authorization error in production."""
    settings = Settings()
    acls = bindings(settings)
    for stage in STAGES:
        # A stage is a module (pipeline/stages/split.py) or a folder with its helpers (pipeline/stages/filter/).
        folder = PROJECT_ROOT / "pipeline" / "stages" / stage.name
        modules = sorted(folder.glob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]
        written = {t for m in modules for t in re.findall(r'Output\(\s*"([a-z-]+)"', m.read_text())}
        allowed = {a.name for a in _of(acls, stage.name, settings) if a.operation == "write"}
        assert written <= allowed, f"{stage.name} writes {sorted(written - allowed)}: add to topics/acls/"


def test_the_declaration_names_only_declared_topics(tmp_path: Path) -> None:
    topics = tmp_path / "topics"
    shutil.copytree(PROJECT_ROOT / "topics", topics)
    settings = Settings.of(topics_dir=topics)
    assert load_acls(settings).principals
    path = acls_file(settings)
    path.write_text(path.read_text().replace('writes = ["requests"]', 'writes = ["request"]'))
    with pytest.raises(ConfigError, match=r"\['request'\]"):
        load_acls(settings)
    path.write_text((PROJECT_ROOT / "topics/acls/principals.toml").read_text().replace('"merge"]', '"merger"]'))
    with pytest.raises(ConfigError, match=r"\[stages.filter\] watches must list other stages"):
        load_acls(settings)
