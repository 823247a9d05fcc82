"""The monitor's state without faust: table keys from reports, windows read back, the page's data, advice, /metrics."""

from __future__ import annotations

import re

from pipeline.flow import STAGES
from pipeline.monitor.state import MonitorState, Window, counter_keys, prometheus_text
from pipeline.operations.status import Member, StageStatus
from pipeline.settings import PROJECT_ROOT
from pipeline.telemetry import StageReport


def report() -> StageReport:
    return StageReport("merge", "merge-0", 1000.0, 1.0, records=10, batches=2, answers={"ok": 9, "partial": 1},
                       dead_letters={"invalid_request": 2}, hops_ms={"infer": [12.0, 14.0, 180.0]},
                       latest_dead=[{"code": "invalid_request", "reason": "bad", "source": "results[0]@1",
                                     "key": "k"}])  # fmt: skip


def test_a_report_becomes_counter_increments_and_windows_read_them_back() -> None:
    keys = counter_keys(report())
    assert keys["answers|merge|ok"] == 9 and keys["dead|merge|invalid_request"] == 2 and keys["records|merge"] == 10
    assert keys["latency|infer|6"] == 2 and keys["latency|infer|13"] == 1, "buckets of 15 ms and 200 ms"
    window = Window.of([*keys.items(), ("latency|infer|999", 5), ("junk", 1)])
    data = window.to_json(60.0)
    assert data["answers"]["merge"] == {"ok": 9, "partial": 1} and data["error_rate"]["merge"] == 0.1
    assert data["hops"]["infer"] == {"p50_ms": 15, "p99_ms": 200, "count": 3}


def test_the_page_data_lists_stages_in_flow_order_with_lag_advice_and_dead_letters() -> None:
    state = MonitorState([(s.name, s.source, s.sinks) for s in STAGES])
    state.saw(report())
    members = (Member("infer-0", "/10.0.0.1", (0, 1, 2)),)
    statuses = [StageStatus("infer", "parts", members, 4000, 40.0, 50.0, 120.0, None, "lagging", 12),
                StageStatus("merge", "results", members, 0, 0.0, 30.0, 30.0, 0.0, "ok", 12)]  # fmt: skip
    state.lag(statuses, now=100.0)
    keys = counter_keys(report())
    page = state.to_json(Window.of([]), Window.of(keys.items()))
    assert [s["name"] for s in page["stages"]] == [s.name for s in STAGES]
    infer = page["stages"][2]
    assert infer["state"] == "lagging" and infer["drain_s"] is None and infer["members"][0]["partitions"] == [0, 1, 2]
    assert infer["advice"]["action"] == "up" and infer["advice"]["members"] == 3
    assert page["stages"][3]["error_rate"] == 0.1 and page["latest_dead"][0]["stage"] == "merge"
    assert page["stages"][0]["state"] == "unknown", "a stage not read yet says so"
    assert state.advice_json()["infer"]["inputs"]["lag"] == 4000
    text = prometheus_text(state, page["windows"]["1m"]).decode()
    assert 'pipeline_scaling_advice_members{stage="infer"} 3.0' in text
    assert 'pipeline_monitor_drain_seconds{stage="infer"} +Inf' in text
    assert 'pipeline_monitor_latency_p99_seconds{hop="infer"} 0.2' in text


def test_only_the_monitor_package_imports_faust() -> None:
    importers = sorted(
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "pipeline").rglob("*.py")
        if re.search(r"^\s*(import faust|from faust)", path.read_text(), re.MULTILINE)
    )
    assert importers == ["pipeline/monitor/app.py", "pipeline/monitor/auth.py"]


def test_the_history_keeps_fifteen_minutes_of_each_stage_for_the_charts() -> None:
    from pipeline.monitor.history import History

    history = History()
    members = (Member("infer-0", "/10.0.0.1", (0,)),)
    busy = StageStatus("infer", "parts", members, 40, 2.5, 80.0, 60.0, None, "lagging", 12)
    idle = StageStatus("infer", "parts", (), 0, None, 0.0, 0.0, 0.0, "idle", 12)
    history.add(1000.0, {"infer": idle}, Window.of([]))
    keys = counter_keys(StageReport("infer", "infer-0", 1.0, 1.0, answers={"ok": 8, "model_error": 2},
                                    hops_ms={"infer": [12.0] * 98 + [180.0] * 2, "total": [40.0] * 10}))  # fmt: skip
    history.add(1005.0, {"infer": busy}, Window.of(keys.items()))
    data = history.to_json(["filter", "infer"])
    assert data["at"] == [1000.0, 1005.0]
    infer = data["stages"]["infer"]
    assert infer["arrival"] == [0.0, 60.0] and infer["consume"] == [0.0, 80.0] and infer["lag_s"] == [None, 2.5]
    assert infer["p99_ms"] == [None, 200] and infer["errors"] == [0.0, 0.2] and infer["members"] == [0.0, 1.0]
    assert data["stages"]["filter"]["arrival"] == [None, None], "a stage not read yet has gaps, not zeros"
    assert data["end_to_end"] == {"p50_ms": [None, 50], "p99_ms": [None, 50]}
    history.add(1000.0 + 900.0 + 1.0, {"infer": idle}, Window.of([]))
    assert history.to_json(["infer"])["at"] == [1005.0, 1901.0], "older than 15 minutes: gone"
