"""The topic declarations under topics/ and their loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.topics import REQUIRED_CONFIG, load_topics

PIPELINE_TOPICS = {"requests", "filtered", "parts", "results", "answers", "dead-letters", "merge-state",
                   "prompts", "answer-chunks", "sessions", "answer-cache", "telemetry"}  # fmt: skip
# Read by the monitor alone (one instance, whole), not by a stage that scales.
OPS_TOPICS = {"telemetry"}

GOOD = """\
name = "{name}"
partitions = 3
carries = "things, keyed by id"

[config]
"cleanup.policy" = "delete"
"retention.ms" = 1000
"max.message.bytes" = 1048576
"""


def _settings(topics_dir: Path, prefix: str = "") -> Settings:
    return Settings.of(topics_dir=topics_dir, prefix=prefix)


def test_the_project_declares_every_pipeline_topic() -> None:
    specs = load_topics(Settings())
    assert set(specs) == PIPELINE_TOPICS
    for spec in specs.values():
        if spec.name not in OPS_TOPICS:
            assert spec.partitions >= 8, f"{spec.name}: a stage must scale to at least 8 members"
        assert set(REQUIRED_CONFIG) <= set(spec.config)
        assert "keyed" in spec.carries or "key =" in spec.carries
        assert spec.source == PROJECT_ROOT / "topics" / f"{spec.name}.toml"


def test_parts_are_keyed_by_request_and_part_the_rest_by_request() -> None:
    specs = load_topics(Settings())
    assert '"<request id>#<part index>"' in specs["parts"].carries
    for name in ("requests", "filtered", "results", "answers"):
        assert "keyed by request id" in specs[name].carries


def test_each_changelog_has_its_source_topics_partition_count_and_is_compacted() -> None:
    from pipeline.flow import STAGES

    specs = load_topics(Settings())
    for stage in STAGES:
        if stage.changelog:
            assert specs[stage.changelog].partitions == specs[stage.source].partitions, stage.name
            assert specs[stage.changelog].config["cleanup.policy"] == "compact", stage.name
        for sink in stage.sinks:
            assert sink in specs, f"{stage.name} writes {sink}, which is not declared"


def test_the_prefix_names_the_cluster_topic() -> None:
    specs = load_topics(Settings.of(prefix="t1-"))
    assert specs["requests"].name == "requests"
    assert specs["requests"].topic == "t1-requests"


def test_config_values_become_kafka_strings(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        GOOD.format(name="a") + '"message.timestamp.type" = "LogAppendTime"\n"unclean.leader.election.enable" = false\n'
    )
    spec = load_topics(_settings(tmp_path))["a"]
    assert spec.config["retention.ms"] == "1000"
    assert spec.config["unclean.leader.election.enable"] == "false"
    assert spec.config["message.timestamp.type"] == "LogAppendTime"
    with pytest.raises(TypeError):
        spec.config["retention.ms"] = "1"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = ", "cannot read topic declaration"),
        (GOOD.format(name="other"), "differs from the file name"),
        (GOOD.format(name="a") + "\n[extra]\n", "unknown keys ['extra']"),
        (GOOD.format(name="a").replace('carries = "things, keyed by id"\n', ""), "missing keys ['carries']"),
        (GOOD.format(name="a").replace("partitions = 3", "partitions = 0"), "partitions must be a positive integer"),
        (GOOD.format(name="a").replace("partitions = 3", 'partitions = "3"'), "partitions must be a positive integer"),
        (GOOD.format(name="a").replace("things, keyed by id", " "), "carries must say"),
        (GOOD.format(name="a").replace('"retention.ms" = 1000\n', ""), "must set ['retention.ms']"),
        (GOOD.format(name="a") + '"segment.ms" = 1.5\n', "use a string, integer or boolean"),
        (GOOD.format(name="a") + '"Not A Key" = 1\n', "is not a Kafka config name"),
    ],
)
def test_bad_declarations_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "a.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_topics(_settings(tmp_path))
    assert message in str(caught.value)
    assert str(tmp_path / "a.toml") in str(caught.value)


def test_invalid_topic_name(tmp_path: Path) -> None:
    (tmp_path / "a b.toml").write_text(GOOD.format(name="a b"))
    with pytest.raises(ConfigError, match="not a valid Kafka topic name"):
        load_topics(_settings(tmp_path))


def test_a_prefix_that_makes_names_invalid(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD.format(name="a"))
    with pytest.raises(ConfigError, match="cluster name 'bad prefix a'"):
        load_topics(_settings(tmp_path, prefix="bad prefix "))


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no topic declarations"):
        load_topics(_settings(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_topics(_settings(tmp_path / "nope"))


def test_a_copy_of_the_declarations_loads_the_same(tmp_path: Path) -> None:
    copy = tmp_path / "topics"
    shutil.copytree(PROJECT_ROOT / "topics", copy)
    original, copied = load_topics(Settings()), load_topics(_settings(copy))
    assert {n: (s.partitions, dict(s.config)) for n, s in original.items()} == {
        n: (s.partitions, dict(s.config)) for n, s in copied.items()
    }
