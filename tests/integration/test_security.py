"""The pipeline on a secured broker: SASL_SSL (SCRAM-SHA-512), TLS and least-privilege ACLs.

A secure broker of this module's own (``pipeline kafka start --secure``; the
shared broker is never touched) runs every stage, generate included, each as
its own principal with the ACLs of topics/acls/ (fixtures in
``secure_fixtures.py``, probes in ``secure_probes.py``). The tests check that a
chat reply streams, sessions and the answer cache work, the members write
telemetry that ``pipeline monitor`` (faust) reads as the monitor principal,
and that the ACLs hold: who may not read or write is refused, clearly and
within a bounded time; a member refused at run time exits instead of retrying
forever, and answers again once the ACL is back. No member may exit unasked.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.errors import AuthenticationError, AuthorizationError
from pipeline.flow import STAGES
from pipeline.local.secure import tls_files
from pipeline.local.supervisor import Supervisor
from pipeline.messages import Answer, Chunk
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
from tests.integration.harness import LOG_ROOT, read_topic, unexpected_restarts
from tests.integration.secure_fixtures import COUNTS, REVOKED, as_user
from tests.integration.secure_probes import (
    REFUSED_WITHIN_S,
    exits,
    group_error,
    produce_error,
    read_error,
    refusals,
    revoke,
    wait_for_exit,
)
from tests.integration.test_monitor import wait_for_state
from tests.net import free_port

ROLES = ("client", *COUNTS, "monitor")
EXIT_WITHIN_S = 60.0  # a member refused a write ends within this (old behaviour: aborted and redone forever)
CHAT = {"task": "chat", "text": "Where is my order? Which payment methods do you accept?"}


def test_the_whole_pipeline_answers_over_sasl_ssl(pipeline: Settings) -> None:
    with Client(as_user(pipeline, "client")) as client:
        answer = client.ask({"task": "faq", "text": "How long does shipping take?", "lang": "en"}, timeout_s=60)
        assert answer.ok, answer.error
        assert answer.result is not None and answer.result["answers"], answer.result
        embedded = client.ask({"task": "embed", "text": "Where is my parcel?"}, timeout_s=60)
        assert embedded.ok and embedded.result is not None, embedded.error
        assert len(embedded.result["embedding"]) == 384


def test_a_chat_reply_streams_over_sasl_ssl_then_the_answer_carries_it_all(pipeline: Settings) -> None:
    """merge hands generate the prompt; generate streams answer-chunks and commits the answer, as its principal."""
    with Client(as_user(pipeline, "client")) as client:
        *deltas, answer = list(client.stream(CHAT, timeout_s=90))
    assert isinstance(answer, Answer) and answer.ok, answer
    assert all(isinstance(d, str) for d in deltas) and len(deltas) > 1, f"the reply came in pieces: {deltas}"
    result = answer.result or {}
    assert "".join(str(d) for d in deltas) == result["reply"]
    assert [e["entry"] for e in result["entries"]] == ["track-order", "payment-methods"]
    assert result["tokens"]["completion"] == 16, result["tokens"]
    chunks = [Chunk.decode(m.value()) for m in read_topic(pipeline, "answer-chunks", expect=len(deltas))]
    assert [c.seq for c in chunks if c.id == answer.id] == list(range(len(deltas)))


def test_a_follow_up_in_the_same_session_is_answered_with_the_earlier_turn(pipeline: Settings) -> None:
    session = f"s-{uuid.uuid4().hex[:6]}"
    with Client(as_user(pipeline, "client")) as client:
        first, second = [
            client.ask({"task": "chat", "text": text, "session": session}, timeout_s=90)
            for text in ("Can I return shoes that don't fit?", "And how long does that take?")
        ]
    assert first.ok and second.ok, (first, second)
    assert first.result is not None and second.result is not None
    assert (first.result["turns_in_prompt"], second.result["turns_in_prompt"]) == (0, 1)
    # The turns are in generate's table, backed by the sessions topic it may write (and restore from).
    sessions = [m for m in read_topic(pipeline, "sessions", expect=2) if m.key() == session.encode()]
    assert len(sessions) == 2 and orjson.loads(sessions[-1].value())["turns"], sessions


def test_a_repeated_question_is_answered_from_the_answer_cache(pipeline: Settings) -> None:
    """generate writes the answer cache in its transaction; filter follows it and answers the repeat at once."""
    text = f"Do you ship to Canada? ({uuid.uuid4().hex[:6]})"
    with Client(as_user(pipeline, "client")) as client:
        first = client.ask({"task": "chat", "text": text}, timeout_s=90)
        assert first.ok and not first.cached, first
        deadline, second = time.monotonic() + 30, first
        while time.monotonic() < deadline and not second.cached:  # filter sees the entry once the commit is in
            second = client.ask({"task": "chat", "text": "  " + text.upper() + " "}, timeout_s=30)
    assert second.cached is True and second.ok, second
    assert second.result is not None and first.result is not None
    assert second.result["reply"] == first.result["reply"] and second.id != first.id


def test_generate_may_not_write_what_is_not_its_own_nor_use_another_stages_group(pipeline: Settings) -> None:
    generate = as_user(pipeline, "generate")
    for topic, name in (("requests", None), ("answers", f"other{uuid.uuid4().hex[:6]}-answers")):
        error = produce_error(generate, topic, cluster_name=name)
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, name, error)
    error = read_error(generate, "results")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    assert group_error(generate, pipeline.group("merge"), "results") == KafkaError.GROUP_AUTHORIZATION_FAILED
    # The same principal may write its own sinks (and commits in its own group all along): the refusals are the ACLs.
    assert produce_error(generate, "answer-chunks") is None


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
    assert members == COUNTS, "every stage, generate included, as its own principal"


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
    remove_principals(other, [other.principal(role) for role in ROLES])
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
        remove_principals(other, [other.principal(role) for role in ROLES])


def test_filter_probes_the_running_pipeline_and_no_member_is_refused_anything(pipeline: Settings) -> None:
    """After an answer: the probe as filter sees every queue with nothing waiting, and no member's log a refusal.

    Nothing waits once the answer is back, so every age is 0 only if the groups'
    committed offsets were read: a probe that could not read them would start
    at offset 0 and fetch the records already answered. filter's answer-cache
    follower is an assign-only consumer with a group id it has no right to
    (docs/security.md): one FindCoordinator refusal, and no other. Every other
    member, generate included (the chat tests before this one ran it), is
    refused nothing at all.
    """
    logs = LOG_ROOT / pipeline.kafka.prefix.rstrip("-")
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
    refused = refusals(logs / "filter-0.log")
    assert all("FindCoordinator" in line and "answer-cache" in line for line in refused), refused
    others = {stage: refusals(logs / f"{stage}-0.log") for stage in COUNTS if stage != "filter"}
    assert not any(others.values()), others


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
            chat = client.ask({"task": "chat", "text": f"Where is parcel {uuid.uuid4().hex[:6]}?"}, timeout_s=90)
            assert chat.ok and not chat.cached, chat
        # The answers come back to it as merge's telemetry, counted in its windowed tables. All three:
        # merge's first record of a request is split's count of parts, so its first report holds no
        # answer, and the answers after it arrive within one interval; a quiet member still sends them.
        # The chat reply is generate's answer, reported by generate as its principal.
        state = wait_for_state(url, lambda s: s["windows"]["1m"]["answers"].get("merge", {}).get("ok", 0) >= 3
                               and s["windows"]["1m"]["answers"].get("generate", {}).get("ok", 0) >= 1)  # fmt: skip
        rates = state["windows"]["1m"]["records_per_s"]
        assert all(rates.get(stage, 0) > 0 for stage in COUNTS), state["windows"]
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


def test_a_member_refused_at_run_time_exits_and_answers_once_allowed_again(
    secure_run: tuple[Settings, Supervisor],
) -> None:
    """generate's WRITE on sessions taken away while it runs: it ends, naming its user and the topic; back: it answers.

    generate may still READ sessions (its changelog), so the topic's metadata
    is its to see and only the transaction fails, as abortable, on every try:
    aborting and redoing it would go on forever while the member looked alive.
    It exits instead (pipeline/runtime/delivery.py), the supervisor restarts
    it, and once the ACL is back the restarted member answers the request
    whose offsets were never committed. Last in the module: it restarts generate.
    """
    pipeline, supervisor = secure_run
    assert unexpected_restarts(supervisor, {}) == {}, "no member exited before this test"
    user, topic = pipeline.principal("generate"), pipeline.topic("sessions")
    [write] = [a for a in bindings(pipeline) if (a.principal, a.operation, a.name) == (f"User:{user}", "write", topic)]
    revoke(pipeline, write)
    try:
        with Client(as_user(pipeline, "client")) as client:
            request = {"task": "chat", "text": "Do you ship to Canada?", "session": f"s-{uuid.uuid4().hex[:6]}"}
            future = client.send(request, timeout_ms=240_000)
            refused = wait_for_exit(supervisor, REVOKED, EXIT_WITHIN_S)
            apply_acls(pipeline)  # the operator puts the right back
            assert refused, "generate did not exit when refused"
            answer = client.wait(future, 180)
    finally:
        apply_acls(pipeline)
    log = (supervisor.log_dir / f"{REVOKED}.log").read_text(errors="replace")
    said = rf"generate: Kafka refused user '{user}' to write {topic}: .*Topic authorization failed"
    assert re.search(said, log), log[-3000:]
    assert answer.ok and answer.result is not None and answer.result["turns_in_prompt"] == 0, answer
    assert exits(supervisor) == {**dict.fromkeys(exits(supervisor), 0), REVOKED: 1}, "only generate, and once"


def _sources() -> dict[str, str]:
    return {stage.name: stage.source for stage in STAGES}
