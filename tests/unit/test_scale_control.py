"""pipeline scale's checks and the autoscaler's wiring, without processes or a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.flow import STAGES
from pipeline.local.autoscale import Autoscaler, downstream_of, loads
from pipeline.local.control import ScaleError, check_counts, parse_counts, partitions_of, request_scale
from pipeline.operations.scaling import Policy
from pipeline.operations.status import Member, StageStatus
from pipeline.settings import Settings


def test_more_members_than_partitions_is_refused_with_the_limit_named() -> None:
    partitions = partitions_of(Settings())
    assert partitions["infer"] == 12 and set(partitions) == {s.name for s in STAGES}
    check_counts({"infer": 12, "filter": 0}, partitions)
    with pytest.raises(ScaleError, match=r"infer=13: infer reads a topic of 12 partitions, so at most 12 members"):
        check_counts({"infer": 13}, partitions)
    with pytest.raises(ScaleError, match="no stage 'infre'"):
        check_counts({"infre": 1}, partitions)


def test_counts_parse_and_a_bad_one_says_how() -> None:
    assert parse_counts(["infer=3", "split=2"]) == {"infer": 3, "split": 2}
    with pytest.raises(ConfigError, match="say STAGE=N"):
        parse_counts(["infer:3"])


def test_scaling_without_a_running_pipeline_says_so(tmp_path: Path) -> None:
    with pytest.raises(ScaleError, match="no `pipeline up` is running"):
        request_scale(tmp_path, {"infer": 2}, timeout_s=1)


def test_each_stage_knows_the_stages_downstream_of_it() -> None:
    downstream = downstream_of([(s.name, s.source, s.sinks) for s in STAGES])
    assert downstream["filter"] == ["split"]
    assert set(downstream["split"]) == {"infer", "merge"}
    assert downstream["infer"] == ["merge"] and downstream["merge"] == ["generate"]


def status(stage: str, members: int, lag: int, state: str, arrival: float = 0.0, consume: float = 0.0) -> StageStatus:
    group = tuple(Member(f"{stage}-{i}", "/127.0.0.1", (i,)) for i in range(members))
    return StageStatus(stage, "x", group, lag, 30.0 if lag else 0.0, consume, arrival, None, state, 12)


def test_a_reading_becomes_loads_with_starting_members_and_a_backlogged_downstream() -> None:
    statuses = [status("split", 1, 900, "lagging", 100.0, 40.0), status("infer", 2, 5000, "lagging", 80.0, 60.0)]
    by_stage = {load.stage: load for load in loads(statuses, {"split": 1, "infer": 3}, {"split": ["infer"]}, Policy())}
    assert by_stage["split"].downstream_backlogged and by_stage["split"].downstream == "infer"
    assert (by_stage["infer"].members, by_stage["infer"].starting) == (2, 1)
    assert loads(statuses, {"split": 0, "infer": 1}, {}, Policy())[0].stage == "infer", "0 members: switched off"


def test_the_autoscaler_resizes_what_the_decision_changes_and_logs_every_decision(tmp_path: Path) -> None:
    counts = {"filter": 1, "split": 1, "infer": 1, "merge": 1, "generate": 1}
    resized: list[tuple[str, int]] = []
    scaler = Autoscaler(Settings(), lambda: counts, lambda s, n: resized.append((s, n)), Policy(),
                        tmp_path / "autoscale.jsonl")  # fmt: skip
    statuses = [status("infer", 1, 3000, "lagging", 120.0, 40.0), status("merge", 1, 0, "ok", 40.0, 40.0)]
    decisions = scaler.step(statuses, now=100.0)
    assert resized == [("infer", 3)] and [d.action for d in decisions] == ["up", "hold"]
    assert len((tmp_path / "autoscale.jsonl").read_text().splitlines()) == 2
    scaler.told("infer", now=101.0)  # an operator's `pipeline scale` right after: cool down before overruling
    counts["infer"] = 3
    later = scaler.step([status("infer", 3, 3000, "lagging", 200.0, 120.0)], now=110.0)
    assert later[0].action == "hold" and "cooling down" in later[0].reason


def test_following_the_monitors_advice_resizes_within_the_caps(tmp_path: Path) -> None:
    counts = {"filter": 1, "infer": 2, "generate": 0}
    resized: list[tuple[str, int]] = []
    policy = Policy(max_members={"infer": 4})
    scaler = Autoscaler(Settings(), lambda: counts, lambda s, n: resized.append((s, n)), policy,
                        tmp_path / "autoscale.jsonl", advice_url="http://monitor/api/advice",
                        caps={"filter": 12, "infer": 12, "generate": 12})  # fmt: skip
    advice = {"filter": {"members": 1, "reason": "sized right"}, "infer": {"members": 9, "reason": "demand"},
              "generate": {"members": 3, "reason": "demand"}, "merge": "junk"}  # fmt: skip
    assert scaler.follow(advice) == [("infer", 4, "demand")], "capped at --max; a stage run with 0 stays off"
    assert resized == [("infer", 4)] and "infer" in (tmp_path / "autoscale.jsonl").read_text()
