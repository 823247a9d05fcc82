"""``pipeline bench --members``: infer counts as before, or members per stage, one row per setting (issue 19)."""

from __future__ import annotations

import pytest

from pipeline.tools.bench.report import ratios
from pipeline.tools.bench.through import ONE, members, members_label, parse_members


def test_plain_counts_are_infer_members_as_before() -> None:
    assert parse_members("1,2") == (ONE, members(infer=2))
    assert members_label(members(infer=2)) == "2 infer"
    assert members_label(ONE) == ""


def test_per_stage_settings_one_row_each_unnamed_stages_run_one() -> None:
    rows = parse_members("filter=2,split=2,infer=1,merge=2; infer=4")
    assert rows == (
        (("filter", 2), ("split", 2), ("infer", 1), ("merge", 2)),
        (("filter", 1), ("split", 1), ("infer", 4), ("merge", 1)),
    )
    assert members_label(rows[0]) == "filter 2, split 2, infer 1, merge 2"
    assert members_label(members(merge=3)) == "filter 1, split 1, infer 1, merge 3"


@pytest.mark.parametrize("bad", ["infer=0", "infer=two", "generate=2", "infer", "filter=2,=3"])
def test_a_bad_setting_says_how_to_write_one(bad: str) -> None:
    with pytest.raises(ValueError, match="STAGE=N"):
        parse_members(bad)


def test_every_pipeline_row_on_cuda_is_compared_with_raw_cuda() -> None:
    rows = {
        "raw ort": {"throughput": 100.0},
        "raw ort cuda fp32": {"throughput": 10_000.0},
        "pipeline exactly_once cuda": {"throughput": 1_000.0},
        "pipeline exactly_once, filter 2, split 2, infer 4, merge 2 cuda": {"throughput": 5_000.0},
    }
    out = ratios({"rows": rows})
    assert out["pipeline exactly_once cuda / raw ort cuda fp32"] == pytest.approx(0.1)
    assert out["pipeline exactly_once, filter 2, split 2, infer 4, merge 2 cuda / raw ort cuda fp32"] == pytest.approx(
        0.5
    )
