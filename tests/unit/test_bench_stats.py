"""The bench's pure math: percentiles, rates, ratios, CPU accounting from /proc, the report's ratios and table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.tools.bench.report import outside_model, ratios, table
from pipeline.tools.bench.stats import (
    CLOCK_TICKS,
    CpuSnapshot,
    cpu_per_request,
    cpu_seconds,
    listening_pid,
    percentile,
    rate,
    ratio,
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(values, 0.5) == 30.0
    assert percentile(values, 0.0) == 10.0
    assert percentile(values, 1.0) == 50.0
    assert percentile([5.0, 1.0], 0.5) == 3.0  # unsorted input, halfway between
    assert percentile(list(map(float, range(1, 101))), 0.99) == pytest.approx(99.01)
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def test_rate_counts_intervals_and_ratio_guards_missing_numbers() -> None:
    assert rate(11, 100.0, 101.0) == 10.0  # 11 arrivals over one second: ten intervals
    assert math.isnan(rate(1, 0.0, 1.0))
    assert math.isnan(rate(5, 2.0, 2.0))
    assert ratio(300.0, 800.0) == 0.375
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 2.0))


def _stat(tmp: Path, pid: int, utime: int, stime: int, name: str = "python3 -m x") -> None:
    (tmp / str(pid)).mkdir(exist_ok=True)
    # Fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    (tmp / str(pid) / "stat").write_text(f"{pid} ({name}) S 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 7 7 20 0 1 0\n")


def test_cpu_seconds_reads_utime_and_stime_even_with_spaces_in_the_name(tmp_path: Path) -> None:
    _stat(tmp_path, 42, 3 * CLOCK_TICKS, CLOCK_TICKS, name="a (weird) name")
    assert cpu_seconds(42, tmp_path) == pytest.approx(4.0)


def test_cpu_per_request_sums_members_of_a_stage_and_skips_vanished_processes(tmp_path: Path) -> None:
    pids = {"infer-0": 1, "infer-1": 2, "merge-0": 3, "broker": 4, "gone-0": 5}
    for pid in (1, 2, 3, 4):
        _stat(tmp_path, pid, 0, 0)
    before = CpuSnapshot.take(pids, tmp_path)
    assert "gone-0" not in before.seconds
    _stat(tmp_path, 1, 2 * CLOCK_TICKS, 0)
    _stat(tmp_path, 2, CLOCK_TICKS, CLOCK_TICKS)
    _stat(tmp_path, 3, 0, CLOCK_TICKS // 2)
    _stat(tmp_path, 4, CLOCK_TICKS, 0)
    after = CpuSnapshot.take(pids, tmp_path)
    per = cpu_per_request(before, after, 100)
    assert per == pytest.approx({"infer": 0.04, "merge": 0.005, "broker": 0.01})
    with pytest.raises(ValueError):
        cpu_per_request(before, after, 0)


def test_listening_pid_finds_the_socket_owner(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    # 0x2384 = 9092, state 0A = LISTEN, inode 777; a connected socket on the same port does not count.
    (tmp_path / "net" / "tcp").write_text(
        header
        + "   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 777 1\n"
        + "   1: 0100007F:2384 0100007F:9999 01 00000000:00000000 00:00000000 00000000  1000 0 888 1\n"
    )
    (tmp_path / "123" / "fd").mkdir(parents=True)
    (tmp_path / "123" / "fd" / "5").symlink_to("socket:[777]")
    (tmp_path / "124" / "fd").mkdir(parents=True)
    (tmp_path / "124" / "fd" / "5").symlink_to("socket:[888]")
    assert listening_pid(9092, tmp_path) == 123
    assert listening_pid(9093, tmp_path) is None


def test_ratios_and_table_from_a_result() -> None:
    result = {
        "model_ms_batch1": 2.5,
        "rows": {
            "raw ort": {"throughput": 800.0, "batch": 32},
            "naive consumer": {"throughput": 60.0, "batch": 1, "cpu_per_request": {"naive": 0.01}},
            "pipeline exactly_once": {"throughput": 600.0, "light_p50_ms": 12.5, "light_p99_ms": 30.0,
                                      "half_rate": 300.0, "half_p50_ms": 20.0, "half_p99_ms": 40.0,
                                      "cpu_per_request": {"infer": 0.0025, "broker": 0.001}, "limit_before": 500.0},
        },
    }  # fmt: skip
    got = ratios(result)
    assert got["pipeline exactly_once / raw ort"] == 0.75
    assert got["pipeline exactly_once / raw ort just before it"] == 1.2
    assert got["pipeline exactly_once / naive consumer"] == 10.0
    assert got["pipeline exactly_once: half-load p50 / light-load p50"] == 1.6
    assert got["naive consumer / raw ort"] == 0.075
    lines = [line for line in table(result).splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    row = lines[-1]
    assert "| 600.0 |" in row and "| 10.0 |" in row  # light p50 minus the model's 2.5 ms
    assert "broker 1.00, infer 2.50" in row
    whole = {"broker": 0.00107, "filter": 0.00011, "split": 0.00016, "merge": 0.00032, "infer": 0.0044}
    result["rows"]["pipeline exactly_once"]["cpu_per_request"] = whole
    assert outside_model(result) == [
        "pipeline exactly_once: CPU per request outside the model 1.66 ms "
        "(broker 1.07 + filter 0.11 + split 0.16 + merge 0.32; goal ≤ 0.5)"
    ]
