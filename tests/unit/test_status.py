"""pipeline status's arithmetic: rates, time to drain and states from two snapshots."""

from __future__ import annotations

from pipeline.operations.status import GroupSnapshot, Member, compare, render

MEMBER = (Member("infer-0", "/127.0.0.1", (0, 1)),)


def snap(at: float, committed: dict[int, int], ends: dict[int, int], age: float | None = None) -> GroupSnapshot:
    return GroupSnapshot("infer", "parts", at, committed, ends, MEMBER, age)


def test_a_group_working_through_a_backlog_is_lagging_with_a_time_to_drain() -> None:
    status = compare(snap(0, {0: 100, 1: 100}, {0: 300, 1: 300}), snap(10, {0: 200, 1: 200}, {0: 350, 1: 350}, 30.0))
    assert (status.consume_rate, status.arrival_rate, status.lag) == (20.0, 10.0, 300)
    assert status.drain_s == 30.0 and status.state == "lagging" and status.lag_s == 30.0


def test_arrivals_faster_than_the_group_never_drain_and_a_group_that_commits_nothing_is_stalled() -> None:
    outpaced = compare(snap(0, {0: 0}, {0: 100}), snap(10, {0: 50}, {0: 300}, 12.0))
    assert outpaced.drain_s is None and outpaced.state == "lagging"
    stuck = compare(snap(0, {0: 40}, {0: 100}), snap(10, {0: 40}, {0: 120}, 60.0))
    assert stuck.state == "stalled" and stuck.consume_rate == 0.0
    assert "never" in render([outpaced, stuck]) and "infer-0 on /127.0.0.1: partitions 0,1" in render([stuck])


def test_a_caught_up_group_is_ok_and_an_empty_memberless_one_idle() -> None:
    assert compare(snap(0, {0: 10}, {0: 10}), snap(5, {0: 20}, {0: 20})).state == "ok"
    fresh = compare(snap(0, {0: 10}, {0: 12}), snap(5, {0: 20}, {0: 21}, 0.5))
    assert fresh.state == "ok", "a little fresh lag is normal flow, not lagging"
    empty = GroupSnapshot("split", "filtered", 5, {}, {0: 0})
    assert compare(empty, empty).state == "idle"


def test_a_quiet_exactly_once_source_with_only_commit_markers_left_is_ok_not_stalled() -> None:
    # Its committed offsets stop one short of the end on every partition the
    # transaction wrote: the marker. Nothing waits there.
    before = snap(0, {0: 20, 1: 7}, {0: 21, 1: 8})
    quiet = GroupSnapshot("infer", "parts", 5, {0: 20, 1: 7}, {0: 21, 1: 8}, MEMBER, 0.0, frozenset({0, 1}))
    assert quiet.lag == 0
    assert compare(before, quiet).state == "ok"
    waiting = GroupSnapshot("infer", "parts", 5, {0: 20, 1: 7}, {0: 21, 1: 9}, MEMBER, 4.0, frozenset({0}))
    assert waiting.lag == 2 and compare(before, waiting).state == "stalled"
