"""Infer's intra-op threads come from the machine unless set; ORT's spinning is off unless asked for."""

from __future__ import annotations

import dataclasses
import os

from pipeline.models.session import intra_threads, session_options
from pipeline.settings import Settings


def test_threads_default_to_the_cores_this_process_may_use() -> None:
    settings = Settings.from_env(env={})
    assert settings.ort_intra_threads == 0
    assert intra_threads(settings) == len(os.sched_getaffinity(0))
    assert intra_threads(dataclasses.replace(settings, ort_intra_threads=3)) == 3


def test_session_options_carry_threads_and_spinning() -> None:
    settings = Settings.from_env(env={})
    options = session_options(settings)
    assert options.intra_op_num_threads == len(os.sched_getaffinity(0))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(dataclasses.replace(settings, ort_spinning=True, ort_intra_threads=1))
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.intra_op_num_threads == 1
