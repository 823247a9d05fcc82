"""Counting a chaos scenario's answers: lost, duplicated, latency, recovery."""

from __future__ import annotations

from pipeline.tools.bench.loadgen import Arrival
from pipeline.tools.chaos.tally import count, percentile, render


def test_lost_duplicated_codes_and_latency_are_counted_by_id() -> None:
    acked = {"a": 0.0, "b": 0.0, "c": 10.0, "d": 10.0}
    arrivals = [
        Arrival("a", "ok", None, 0.1),
        Arrival("b", "error", "deadline_exceeded", 0.3),
        Arrival("a", "ok", None, 0.5),  # a duplicate
        Arrival("c", "ok", None, 12.0),
        Arrival("zz", "ok", None, 1.0),  # not ours: ignored
    ]
    row = count("x", acked, {"e": "too large"}, arrivals, fault_ends=[5.0])
    assert (row.sent, row.refused, row.lost, row.duplicated) == (4, 1, 1, 1)
    assert row.lost_ids == ["d"] and row.duplicated_ids == ["a"]
    assert dict(row.answers) == {"ok": 2, "deadline_exceeded": 1}
    assert row.p50_ms is not None and round(row.p50_ms) == 300
    assert row.recovery_s == 7.0  # the first request sent after the fault (c at 10 s) answered at 12 s
    table = render([row])
    assert "ok:2 deadline_exceeded:1" in table and "7.0s" in table


def test_no_answer_after_a_fault_means_never_recovered() -> None:
    row = count("x", {"a": 0.0, "b": 9.0}, {}, [Arrival("a", "ok", None, 1.0)], fault_ends=[5.0])
    assert row.recovery_s is None and "never" in render([row])


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None


def test_kill_recoveries_per_member() -> None:
    from pipeline.tools.chaos.recovery import kill_recoveries

    kills = [("split-0", 10.0, 10.7), ("infer-0", 20.0, None)]
    acked = {"a": 9.0, "b": 10.5, "c": 21.0}
    arrivals = [Arrival("a", "ok", None, 9.2), Arrival("b", "ok", None, 12.5), Arrival("c", "ok", None, 24.0)]
    notes = kill_recoveries(kills, acked, arrivals)
    assert notes[0] == (
        "split-0: SIGKILL -> new process 0.7 s; SIGKILL -> first answer to a request sent after it 2.5 s; "
        "new process -> that answer 1.8 s"
    )
    assert notes[1].startswith("infer-0: SIGKILL -> new process never s")
    assert notes[1].endswith("sent after it 4.0 s; new process -> that answer never s")


def test_p50_return_after_the_burst() -> None:
    from pipeline.tools.chaos.scenarios import p50_return

    acked: dict[str, float] = {}
    arrivals = []
    for i in range(10):  # before the burst (0..10 s): 100 ms each
        acked[f"n{i}"] = float(i)
        arrivals.append(Arrival(f"n{i}", "ok", None, i + 0.1))
    for i in range(10):  # the burst (10..20 s): answered late, the last at 30 s
        acked[f"b{i}"] = 10.0 + i
        arrivals.append(Arrival(f"b{i}", "ok", None, 21.0 + i))
    for i in range(20):  # after (20..40 s): slow until 31 s, normal (100 ms) from the request sent at 31 s
        sent = 20.0 + i
        acked[f"a{i}"] = sent
        arrivals.append(Arrival(f"a{i}", "ok", None, sent + (5.0 if sent < 31 else 0.1)))
    [note] = p50_return(acked, arrivals, 0.0, 10.0, 20.0)
    assert note == (
        "p50 normal 100 ms; backlog drained 10.0 s after the burst; p50 back within 1.5x normal +1.1 s from the drain"
    )


def test_shed_timing_counts_early_answers() -> None:
    from pipeline.tools.chaos.scenarios import shed_timing

    acked = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
    arrivals = [
        Arrival("a", "error", "deadline_exceeded", 0.4),
        Arrival("b", "error", "deadline_exceeded", 30.1),
        Arrival("c", "error", "deadline_exceeded", 0.6),
        Arrival("d", "ok", None, 0.2),
    ]
    assert shed_timing(acked, arrivals) == "answers not ok: deadline_exceeded 3: 2 within 5 s of produce, p50 0.6 s"


def test_answers_by_phase_of_the_burst() -> None:
    from pipeline.tools.chaos.scenarios import by_phase

    acked = {"a": 1.0, "b": 11.0, "c": 12.0, "d": 13.0, "e": 25.0}
    arrivals = [
        Arrival("a", "ok", None, 1.2),
        Arrival("b", "error", "deadline_exceeded", 11.1),
        Arrival("c", "ok", None, 14.0),
        Arrival("d", "error", "partial", 43.0),
    ]
    assert by_phase(acked, arrivals, 10.0, 20.0) == (
        "answers by when sent: before the burst ok:1; during the burst deadline_exceeded:1 ok:1 partial:1; "
        "after the burst lost:1"
    )


def test_an_outage_with_answers_or_an_open_port_during_it_is_a_problem() -> None:
    from pipeline.tools.chaos.scenarios import outage_check
    from pipeline.tools.chaos.tally import Row

    before, after = Arrival("a", "ok", None, 100.2), Arrival("b", "ok", None, 106.0)
    clean = Row("broker-restart")
    assert "answers during it: 0" in outage_check(clean, [before, after], 100.0, 105.0, [])
    assert clean.problems == []  # an answer fetched just before the stop, inside the grace, is fine

    answered = Row("broker-restart")
    outage_check(answered, [before, Arrival("c", "ok", None, 102.0), after], 100.0, 105.0, [])
    assert len(answered.problems) == 1 and "1 answers arrived" in answered.problems[0]

    reachable = Row("broker-restart")
    outage_check(reachable, [before, after], 100.0, 105.0, [100.1, 100.4])
    assert len(reachable.problems) == 1 and "accepted 2 probes" in reachable.problems[0]
