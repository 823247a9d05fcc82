"""The runner's three policies, asked directly: no consumer, no broker, no clock."""

from __future__ import annotations

from pipeline.records import Batching
from pipeline.runtime.policies import BackPressure, BatchReadiness, CommitOrder, Timers

A0, A1, B0 = ("a", 0), ("a", 1), ("b", 0)


# -- batch readiness ---------------------------------------------------------------


def test_a_quick_stage_takes_whatever_has_arrived_up_to_a_batch() -> None:
    ready = BatchReadiness(Batching(max_batch=4, max_wait_ms=0))
    assert ready.take(0, None, 1000.0, 0, 0) == 0
    assert ready.take(3, None, 1000.0, 0, 0) == 3
    assert ready.take(9, None, 1000.0, 0, 0) == 4


def test_a_model_stage_waits_for_a_full_batch_or_its_oldest_record_to_have_waited() -> None:
    ready = BatchReadiness(Batching(max_batch=4, max_wait_ms=10))
    assert ready.take(2, 995.0, 1000.0, 0, 0) == 0  # 5 ms waited of 10
    assert ready.take(2, 990.0, 1000.0, 0, 0) == 2  # waited long enough
    assert ready.take(4, 999.0, 1000.0, 0, 0) == 4  # full: no reason to wait
    assert ready.take(2, 0.0, 1000.0, 0, 0) == 2  # no timestamp: counts as waited


def test_at_most_max_running_batches_are_in_the_handler() -> None:
    ready = BatchReadiness(Batching(max_batch=4, max_running=2))
    assert ready.take(4, None, 0.0, computing=1, running=1) == 4
    assert ready.take(4, None, 0.0, computing=2, running=2) == 0
    # Without overlap a finished batch waiting for its commit still counts ...
    assert ready.take(4, None, 0.0, computing=1, running=2) == 0
    # ... with overlap it does not, but never more than one beyond max_running.
    overlap = BatchReadiness(Batching(max_batch=4, max_running=2), overlap=True)
    assert overlap.take(4, None, 0.0, computing=1, running=2) == 4
    assert overlap.take(4, None, 0.0, computing=1, running=3) == 0


# -- commit order -------------------------------------------------------------------


def test_waiting_commits_the_oldest_first() -> None:
    assert CommitOrder.next_ready([(frozenset({A0}), False), (frozenset({B0}), True)], wait=True) == 0
    assert CommitOrder.next_ready([], wait=True) is None


def test_a_finished_batch_passes_older_running_ones_only_on_other_partitions() -> None:
    running_a0 = (frozenset({A0}), False)
    assert CommitOrder.next_ready([running_a0, (frozenset({B0}), True)], wait=False) == 1
    assert CommitOrder.next_ready([running_a0, (frozenset({A0, B0}), True)], wait=False) is None
    assert CommitOrder.next_ready([running_a0, (frozenset({A1}), False)], wait=False) is None
    assert CommitOrder.next_ready([(frozenset({A0}), True), (frozenset({A0}), True)], wait=False) == 0


def test_offsets_committed_are_one_past_the_highest_and_a_redo_starts_at_the_lowest() -> None:
    records = [("a", 0, 7), ("a", 0, 5), ("a", 1, 2), ("b", 0, 0)]
    assert CommitOrder.next_offsets(records) == {A0: 8, A1: 3, B0: 1}
    assert CommitOrder.first_offsets(records) == {A0: 5, A1: 2, B0: 0}


# -- back-pressure ------------------------------------------------------------------


def test_below_the_limit_nothing_is_paused() -> None:
    assert BackPressure(10).decide([A0] * 9, 9, 2, set()) == (set(), set())


def test_at_the_limit_only_partitions_holding_their_share_pause() -> None:
    # 10 in flight over 2 partitions: a share is 5; a0 holds 8, a1 holds 2.
    pause, resume = BackPressure(10).decide([A0] * 8 + [A1] * 2, 10, 2, set())
    assert (pause, resume) == ({A0}, set())


def test_a_paused_partition_resumes_once_it_holds_half_its_share_or_the_buffer_is_half_empty() -> None:
    policy = BackPressure(10)
    # Over half full: a0 (holding 3 > 5 // 2) stays paused, a1 (holding 2) resumes.
    assert policy.decide([A0] * 3 + [A1] * 2 + [B0] * 3, 8, 2, {A0, A1}) == (set(), {A1})
    # Half empty: everything resumes.
    assert policy.decide([A0] * 5, 5, 2, {A0, A1}) == (set(), {A0, A1})


# -- timers ---------------------------------------------------------------------------


def test_a_scheduled_function_runs_at_once_then_once_per_period() -> None:
    timers, ran = Timers(), []
    timers.schedule(100, ran.append)
    for now in (1000.0, 1050.0, 1100.0, 1150.0, 1250.0):
        timers.run(now)
    assert ran == [1000.0, 1100.0, 1250.0]
