"""The pipeline on a secured broker: SASL_SSL (SCRAM-SHA-512), TLS and least-privilege ACLs.

This module starts its own secure broker (``pipeline kafka start --secure``
with a folder and free ports of its own; the shared broker is never touched),
runs the whole pipeline on it with every stage as its own principal, and
checks that the ACLs hold: who may not read or write, is refused, clearly and
within a bounded time. The members write telemetry as their own principals and
``pipeline monitor`` (faust) reads it as the monitor principal.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.errors import AuthenticationError, AuthorizationError
from pipeline.local import broker
from pipeline.local.secure import admin_settings, tls_files
from pipeline.operations.acls import bindings
from pipeline.operations.admin import check_broker
from pipeline.operations.apply_acls import apply_acls, list_acls, remove_principals, to_binding
from pipeline.operations.lag import snapshot
from pipeline.runtime.client import Client
from pipeline.runtime.config import consumer_config, producer_config
from pipeline.runtime.queue_age import QueueAges
from pipeline.security import sasl_password
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.stages.filter.queue_wait import DOWNSTREAM
from pipeline.topics import load_topics
from tests.integration.harness import ALL_STAGES, LOG_ROOT, running_pipeline
from tests.integration.test_monitor import wait_for_state
from tests.net import free_port

COUNTS = dict.fromkeys(ALL_STAGES, 1)
REFUSED_WITHIN_S = 20.0  # a refused client must say so within this, not hang


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A secure broker of this module's own; Settings as its admin, with a prefix of their own."""
    base = Settings.from_env(
        kafka_dir=tmp_path_factory.mktemp("kafka-secure"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_heap="512m",
        kafka_secure=True,
        prefix=f"sec{uuid.uuid4().hex[:8]}-",
        chat_model="",  # no generate stage here: the four answer-path stages
    )
    if broker.kafka_version(broker.paths(base)) is None:
        pytest.fail("no Kafka jars: run `make setup`", pytrace=False)
    base = base.replace(bootstrap_servers=broker.address(base))
    broker.start(base, timeout_s=180)
    try:
        yield admin_settings(base)
    finally:
        broker.stop(base)


@pytest.fixture(scope="module")
def pipeline(secure: Settings) -> Iterator[Settings]:
    # sasl_username "": each member connects as its stage's principal (pipeline run STAGE).
    with running_pipeline(secure, COUNTS, sasl_username=""):
        yield secure


def as_user(settings: Settings, role: str) -> Settings:
    """``settings`` as the principal of ``role`` (a stage, client or monitor), password from secrets/."""
    return settings.replace(sasl_username=settings.principal(role))


def read_error(settings: Settings, topic: str, timeout_s: float = REFUSED_WITHIN_S) -> KafkaError | None:
    """Why ``settings``' user cannot read partition 0 of ``topic`` from the start; None if it can.

    A user with no right at all on the topic is told so in the metadata; one
    that may describe it (say, because it may write it) is refused the fetch.
    An assign-only consumer still has a group id (the Python client insists)
    and reports once that it may not look up that group's coordinator; that
    is not the read's error, and is skipped.
    """
    name = settings.topic(topic)
    consumer = Consumer(consumer_config(settings, f"{settings.security.sasl_username}-probe", "probe"))
    try:
        found = consumer.list_topics(name, timeout=10).topics[name]
        if found.error is not None:
            return found.error
        consumer.assign([TopicPartition(name, 0, 0)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return None  # a record: reading is allowed
            if error.code() != KafkaError.GROUP_AUTHORIZATION_FAILED:
                return error
        return None
    finally:
        consumer.close()


def produce_error(settings: Settings, topic: str) -> KafkaError | None:
    producer = Producer(producer_config(settings, f"{settings.security.sasl_username}-probe"))
    results: list[KafkaError | None] = []
    producer.produce(settings.topic(topic), key=b"probe", value=b"{}", on_delivery=lambda err, _: results.append(err))
    assert producer.flush(REFUSED_WITHIN_S) == 0, "no delivery report in time"
    return results[0]


def test_the_whole_pipeline_answers_over_sasl_ssl(pipeline: Settings) -> None:
    with Client(as_user(pipeline, "client")) as client:
        answer = client.ask({"task": "faq", "text": "How long does shipping take?", "lang": "en"}, timeout_s=60)
        assert answer.ok, answer.error
        assert answer.result is not None and answer.result["answers"], answer.result
        embedded = client.ask({"task": "embed", "text": "Where is my parcel?"}, timeout_s=60)
        assert embedded.ok and embedded.result is not None, embedded.error
        assert len(embedded.result["embedding"]) == 384


def test_a_client_without_credentials_is_refused_clearly(secure: Settings) -> None:
    plain = secure.replace(security_protocol="PLAINTEXT", sasl_username="", sasl_password_file="")
    began = time.monotonic()
    with pytest.raises(AuthenticationError, match="PIPELINE_SECURITY_PROTOCOL=SASL_SSL"):
        Client(plain)
    assert time.monotonic() - began < REFUSED_WITHIN_S
    with pytest.raises(AuthenticationError, match="PIPELINE_SECURITY_PROTOCOL"):
        check_broker(plain, timeout_s=3)


def test_a_wrong_password_is_refused_clearly(secure: Settings, tmp_path: Path) -> None:
    (tmp_path / "wrong").write_text("not-the-password\n")
    wrong = as_user(secure, "client").replace(sasl_password_file=str(tmp_path / "wrong"))
    began = time.monotonic()
    with pytest.raises(AuthenticationError, match=rf"refused SASL user '{secure.principal('client')}'.*credentials"):
        Client(wrong)
    assert time.monotonic() - began < REFUSED_WITHIN_S
    # A TLS client that does not trust the broker's CA is refused too, and told why.
    untrusting = as_user(secure, "client").replace(ssl_ca_location="")
    with pytest.raises(AuthenticationError, match="TLS"):
        check_broker(untrusting, timeout_s=10)


def test_split_cannot_read_answers_nor_write_requests(pipeline: Settings) -> None:
    split = as_user(pipeline, "split")
    error = read_error(split, "answers")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    error = produce_error(split, "requests")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    # The same principal may write its own sinks: the refusals above are the ACLs, not a broken login.
    assert produce_error(split, "dead-letters") is None


def test_a_client_cannot_read_results_nor_commit_a_stage_group(pipeline: Settings) -> None:
    client = as_user(pipeline, "client")
    error = read_error(client, "results")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    committer = Consumer(consumer_config(client, pipeline.group("split"), "client-in-split-group"))
    try:
        with pytest.raises(KafkaException):
            committer.commit(offsets=[TopicPartition(client.topic("filtered"), 0, 0)], asynchronous=False)
        # Why: the broker would not even say who coordinates that group for this user.
        errors = []
        deadline = time.monotonic() + REFUSED_WITHIN_S
        while time.monotonic() < deadline and KafkaError.GROUP_AUTHORIZATION_FAILED not in errors:
            message = committer.poll(0.2)
            if message is not None and message.error() is not None:
                errors.append(message.error().code())
        assert KafkaError.GROUP_AUTHORIZATION_FAILED in errors, errors
    finally:
        committer.close()
    # A Client whose user may not read answers says so at once, with the user, instead of timing out.
    began = time.monotonic()
    user = pipeline.principal("split")
    with Client(as_user(pipeline, "split")) as wrong, pytest.raises(AuthorizationError, match=f"user '{user}'"):
        wrong.ask({"task": "embed", "text": "hello"}, timeout_s=60)
    assert time.monotonic() - began < REFUSED_WITHIN_S


def test_the_monitor_sees_every_stage_group(pipeline: Settings) -> None:
    monitor = as_user(pipeline, "monitor")
    groups = snapshot(monitor, [(stage, source) for stage, source in _sources().items()])
    members = {group.stage: len(group.members) for group in groups}
    assert members == COUNTS


def test_pipeline_status_reads_every_stage_as_the_monitor_principal(pipeline: Settings) -> None:
    """The operator's command, as a user runs it: settings from the environment, password from a file."""
    monitor = as_user(pipeline, "monitor")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(monitor.to_env(secrets=True))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--json", "--interval", "1"],
                          env=env, capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
    assert done.returncode in (0, 2), done.stderr[-2000:]  # 2: some stage stalled (printed)
    reading = orjson.loads(done.stdout.strip().splitlines()[-1])
    seen = {stage["stage"]: (len(stage["members"]), stage["state"] in ("ok", "idle")) for stage in reading["stages"]}
    assert {stage: seen.get(stage) for stage in COUNTS} == {stage: (1, True) for stage in COUNTS}, reading
    assert sasl_password(monitor.security) not in done.stdout + done.stderr


def test_acls_apply_idempotently_and_take_back_what_is_not_declared(pipeline: Settings) -> None:
    declared = {to_binding(acl) for acl in bindings(pipeline)}
    assert apply_acls(pipeline).created == ()
    stray = dataclasses.replace(
        next(a for a in bindings(pipeline) if a.principal.endswith("split") and a.operation == "read"),
        name=pipeline.topic("answers"),
    )
    from pipeline.operations.admin import _admin, _wait

    admin = _admin(pipeline)
    _wait(admin.create_acls([to_binding(stray)]), "create ACL")
    report = apply_acls(pipeline)
    assert report.created == () and len(report.deleted) == 1 and "answers" in report.deleted[0]
    assert set(list_acls(pipeline)) == declared


def test_removing_a_prefix_takes_its_principals_away(secure: Settings) -> None:
    other = secure.replace(prefix=f"gone{uuid.uuid4().hex[:6]}-")
    from pipeline.local.cluster import secure_principals

    secure_principals(other, say=lambda _: None)
    assert list_acls(other)
    remove_principals(other, [other.principal(role) for role in ("client", *ALL_STAGES, "generate", "monitor")])
    assert list_acls(other) == []


def test_filters_shedding_probe_reads_the_queues_after_it_as_the_filter_principal(secure: Settings) -> None:
    """filter's probe (QueueAges) as ``{prefix}filter``: every queue's partitions, committed offsets and head ages.

    On a prefix of its own, with no stage running, so what waits is known: one
    record in each of split's, infer's and merge's queues, and split's group
    committed past its record. Without READ on the queues the heads cannot be
    fetched (every age 0); without DESCRIBE on the groups the committed offsets
    cannot be read (split's record would count as waiting); without either, infer's
    and merge's queues are not even in the metadata (no ages at all).
    """
    other = secure.replace(prefix=f"probe{uuid.uuid4().hex[:6]}-")
    from pipeline.local.cluster import secure_principals
    from pipeline.operations.admin import apply_topics

    apply_topics(other)
    secure_principals(other, say=lambda _: None)
    try:
        producer = Producer(producer_config(other, "probe-fill"))
        for _, source in DOWNSTREAM:
            producer.produce(other.topic(source), key=b"k", value=b"{}", partition=0)
        assert producer.flush(REFUSED_WITHIN_S) == 0
        # split has taken its record: its group's committed offset is past it.
        committer = Consumer(consumer_config(other, other.group("split"), "probe-committer"))
        committer.commit(offsets=[TopicPartition(other.topic("filtered"), 0, 1)], asynchronous=False)
        committer.close()
        time.sleep(1.0)  # the records have waited a moment

        probe = QueueAges(as_user(other, "filter"), DOWNSTREAM)
        try:
            ages = probe.read()
        finally:
            probe.close()
        assert {stage: len(values) for stage, values in ages.items()} == {
            stage: load_topics(other)[source].partitions for stage, source in DOWNSTREAM
        }, ages
        assert ages["split"][0].committed == 1, "split's committed offset is read"
        assert {q.age for q in ages["split"].values()} == {0.0}, "nothing waits for split"
        for stage in ("infer", "merge"):
            *idle, head = sorted((q.age for q in ages[stage].values()), key=lambda age: -1.0 if age is None else age)
            assert head is not None and 1.0 <= head < 60.0 and set(idle) == {0.0}, (stage, ages)  # fetched
    finally:
        remove_principals(other, [other.principal(role) for role in ("client", *ALL_STAGES, "generate", "monitor")])


def test_filter_probes_the_running_pipeline_and_is_refused_nothing(pipeline: Settings) -> None:
    """After an answer: the probe as filter sees every queue with nothing waiting, and filter's log no refusal.

    Nothing waits once the answer is back, so every age is 0 only if the groups'
    committed offsets were read: a probe that could not read them would start
    at offset 0 and fetch the records already answered. filter's answer-cache
    follower is an assign-only consumer with a group id it has no right to
    (docs/security.md): one FindCoordinator refusal, and no other.
    """
    log = LOG_ROOT / pipeline.kafka.prefix.rstrip("-") / "filter-0.log"
    with Client(as_user(pipeline, "client")) as client:
        assert client.ask({"task": "embed", "text": "Where is parcel 7?"}, timeout_s=60).ok
    probe = QueueAges(as_user(pipeline, "filter"), DOWNSTREAM)
    try:
        deadline = time.monotonic() + 30.0  # merge commits its last record a moment after the answer
        while True:
            ages = probe.read()
            if all(q.age == 0.0 for values in ages.values() for q in values.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        probe.close()
    assert {stage: len(values) for stage, values in ages.items()} == {
        stage: load_topics(pipeline)[source].partitions for stage, source in DOWNSTREAM
    }, ages
    assert all(q.age == 0.0 for values in ages.values() for q in values.values()), ages
    refused = [line for line in log.read_text(errors="replace").splitlines()
               if re.search(r"authori[sz]ation[ _]?fail", line, re.IGNORECASE)]  # fmt: skip
    assert all("FindCoordinator" in line and "answer-cache" in line for line in refused), refused


def test_the_monitor_counts_the_stages_telemetry_over_sasl_ssl(pipeline: Settings, tmp_path: Path) -> None:
    """`pipeline monitor` as its own principal: faust logs in, makes its changelogs, reads telemetry and lag.

    The members write telemetry as their stages' principals (allowed by the
    ACLs from the map); the monitor, started with no user, logs in as
    ``{prefix}monitor`` with that user's password file, and must neither be
    refused anything nor print the password.
    """
    port = free_port()
    log = LOG_ROOT / pipeline.kafka.prefix.rstrip("-") / "monitor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # No user: `pipeline monitor` is the monitor principal on a secured cluster by itself.
    env = {**os.environ, **pipeline.replace(sasl_username="").to_env(), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("PIPELINE_SASL_USERNAME", None)
    with log.open("wb") as out:
        # In a folder of its own: faust makes its data folder ({app id}-data) where it runs.
        process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "monitor", "--port", str(port)],
                                   env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # Up, and its lag timer (the admin client, as the monitor) sees every stage's member.
        wait_for_state(url, lambda s: all(len(x["members"]) == 1 for x in s["stages"] if x["name"] in COUNTS))
        with Client(as_user(pipeline, "client")) as client:
            for i in range(3):
                answer = client.ask({"task": "embed", "text": f"Where is parcel {i}?"}, timeout_s=60)
                assert answer.ok, answer.error
        # The answers come back to it as merge's telemetry, counted in its windowed tables. All three:
        # merge's first record of a request is split's count of parts, so its first report holds no
        # answer, and the answers after it arrive within one interval; a quiet member still sends them.
        state = wait_for_state(url, lambda s: s["windows"]["1m"]["answers"].get("merge", {}).get("ok", 0) >= 3)
        assert state["windows"]["1m"]["records_per_s"].get("filter", 0) > 0, state["windows"]
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace")
    password = (tls_files(pipeline).secrets / pipeline.principal("monitor")).read_text().strip()
    assert password not in text, "the monitor printed its password"
    # Nothing faust does is refused (aiokafka: TopicAuthorizationFailedError, GroupAuthorizationFailedError...).
    assert not re.search(r"authori[sz]ation[ _]?fail", text, re.IGNORECASE), text[-3000:]


def _sources() -> dict[str, str]:
    from pipeline.flow import stage

    return {name: stage(name).source for name in ALL_STAGES}
