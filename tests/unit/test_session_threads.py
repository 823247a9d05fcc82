"""Infer's intra-op threads come from the machine unless set; ORT's spinning is off unless asked for."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.models.session import available_cores, intra_threads, session_options
from pipeline.settings import Settings


def test_threads_default_to_the_usable_cores_less_one(tmp_path: Path) -> None:
    settings = Settings.from_env(env={})
    assert settings.infer.ort_intra_threads == 0
    cores = len(os.sched_getaffinity(0))
    none = tmp_path / "absent"
    assert available_cores(none) == cores
    assert intra_threads(settings.infer, none) == max(1, cores - 1)
    assert intra_threads(settings.replace(ort_intra_threads=3).infer, none) == 3


def test_a_cgroup_quota_caps_the_cores(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert available_cores(quota) == len(os.sched_getaffinity(0))
    quota.write_text("50000 100000\n")  # half a CPU: still one core to run on
    assert available_cores(quota) == 1
    assert intra_threads(Settings.from_env(env={}).infer, quota) == 1
    quota.write_text("garbage\n")
    assert available_cores(quota) == len(os.sched_getaffinity(0))


def test_session_options_carry_threads_and_spinning() -> None:
    settings = Settings.from_env(env={})
    options = session_options(settings)
    assert options.intra_op_num_threads == intra_threads(settings.infer)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(settings.replace(ort_spinning=True, ort_intra_threads=2))
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.intra_op_num_threads == 2
