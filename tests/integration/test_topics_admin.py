"""`pipeline topics apply` against a real broker: creates, grows, corrects, and is idempotent."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from pipeline.cli import main
from pipeline.operations.admin import apply_topics, list_topics
from pipeline.runtime.config import admin_config
from pipeline.settings import Settings
from pipeline.topics import load_topics

T = TypeVar("T")


def _eventually(get: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 15.0) -> T:
    """The broker's caches trail the controller: poll until ``ok(get())`` or time out."""
    deadline = time.monotonic() + timeout_s
    while not ok(value := get()):
        assert time.monotonic() < deadline, f"still {value!r} after {timeout_s} s"
        time.sleep(0.1)
    return value


def test_apply_twice_gives_the_declared_state_and_changes_nothing_the_second_time(settings: Settings) -> None:
    first = apply_topics(settings)
    assert first.changed
    assert all(
        t.changes == (f"created with {load_topics(settings)[t.name].partitions} partitions",) for t in first.topics
    )

    second = apply_topics(settings)
    assert not second.changed
    assert not second.warnings

    states = list_topics(settings)
    assert {s.spec.name for s in states} == set(load_topics(settings))
    for state in states:
        assert state.status == "ok", state
        assert state.partitions == state.spec.partitions
        assert state.spec.topic.startswith(settings.kafka.prefix)


def test_apply_grows_partitions_and_never_shrinks_them(settings: Settings, tmp_path: Path) -> None:
    apply_topics(settings)
    more = tmp_path / "topics"
    shutil.copytree(settings.kafka.topics_dir, more)
    declaration = more / "parts.toml"
    declaration.write_text(declaration.read_text().replace("partitions = 12", "partitions = 16"))
    grown = settings.replace(topics_dir=more)

    report = {t.name: t for t in apply_topics(grown).topics}
    assert report["parts"].changes == ("partitions 12 -> 16",)
    assert not any(t.changes for name, t in report.items() if name != "parts")
    assert {s.spec.name: s.partitions for s in list_topics(grown)}["parts"] == 16

    # Back to the original declaration: Kafka cannot shrink, so apply says so and changes nothing.
    back = apply_topics(settings)
    assert not back.changed
    assert back.warnings == (
        f"{settings.topic('parts')}: has 16 partitions, declared 12: Kafka cannot decrease partitions; left as is",
    )


def test_apply_brings_drifted_configs_back(settings: Settings) -> None:
    apply_topics(settings)
    topic = settings.topic("requests")
    admin = AdminClient(admin_config(settings))
    drift = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    for future in admin.incremental_alter_configs([drift]).values():
        future.result(timeout=15)

    state = _eventually(
        lambda: {s.spec.name: s for s in list_topics(settings)}["requests"], lambda state: state.status == "differs"
    )
    assert state.config_diff == {"retention.ms": ("604800000", "1000")}
    assert state.extra_config == {"segment.ms": "3600000"}

    report = {t.name: t for t in apply_topics(settings).topics}
    assert report["requests"].changes == (
        "retention.ms 1000 -> 604800000",
        "segment.ms 3600000 -> broker default (not declared)",
    )
    assert {s.spec.name: s.status for s in list_topics(settings)}["requests"] == "ok"


def test_the_commands_print_tables(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    args = ["--prefix", settings.kafka.prefix]
    assert main(["topics", "list", "--check", *args]) == 1
    assert main(["topics", "apply", *args]) == 0
    assert main(["topics", "apply", *args]) == 0
    assert main(["topics", "list", "--check", *args]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^{settings.topic('requests')} +created with 12 partitions$", out, re.MULTILINE)
    assert f"0 changed, {len(load_topics(settings))} unchanged, 0 warning(s)" in out
