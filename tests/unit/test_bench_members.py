"""``pipeline bench --members``: infer counts as before, or members per stage, one row per setting (issue 19)."""

from __future__ import annotations

from pathlib import Path

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


def test_a_tree_row_runs_its_members_from_the_other_checkout(tmp_path: Path) -> None:
    """``--tree``: each member imports the other checkout's ``pipeline`` and gets this one's model cache."""
    import time

    from pipeline.commands.bench import _tree
    from pipeline.local.supervisor import Supervisor
    from pipeline.settings import Settings

    other = tmp_path / "other"
    (other / "pipeline").mkdir(parents=True)
    (other / "pipeline" / "__init__.py").write_text("")
    # A stand-in cli: says whose code ran, with which cache, and exits.
    (other / "pipeline" / "cli.py").write_text(
        "import os, pathlib, sys\n"
        "out = pathlib.Path(os.environ['PIPELINE_HEALTH_FILE']).with_suffix('.ran')\n"
        "out.write_text(f\"{pathlib.Path(__file__).resolve()}|{os.environ['PIPELINE_MODEL_CACHE_DIR']}|{sys.argv[-1]}\")\n"
    )
    label, root = _tree(f"base={other}")
    assert (label, root) == ("base", other.resolve())
    # Default model cache (not in the child's PIPELINE_* overrides); a port nothing listens on.
    settings = Settings.of(bootstrap_servers="127.0.0.1:1")
    supervisor = Supervisor({"filter": 1}, settings, tmp_path / "logs", source=root)
    supervisor.start()
    ran = supervisor.members[0].health_path.with_suffix(".ran")
    for _ in range(200):
        if ran.exists() and ran.read_text():
            break
        time.sleep(0.05)
    supervisor.stop()
    assert ran.read_text() == f"{other.resolve() / 'pipeline' / 'cli.py'}|{settings.models.model_cache_dir}|filter"


@pytest.mark.parametrize("bad", ["base", "=/tmp", "base=/nonexistent/checkout"])
def test_a_bad_tree_says_how_to_write_one(bad: str) -> None:
    from pipeline.commands.bench import _tree

    with pytest.raises(SystemExit, match="LABEL=PATH"):
        _tree(bad)
