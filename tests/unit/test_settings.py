"""Settings: the environment round trip that child processes rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Guarantee, Settings


def test_to_env_builds_the_same_settings_in_a_child() -> None:
    settings = Settings.of(prefix="t-", batch_max_parts=7, faq_min_score=0.5, model_cache_dir=Path("/tmp/m"))
    env = settings.to_env()
    assert env["PIPELINE_PREFIX"] == "t-"
    assert "PIPELINE_BOOTSTRAP_SERVERS" not in env  # defaults are not written
    assert Settings.from_env(env) == settings


def test_an_unknown_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_BATCH_MAX_PART"):
        Settings.from_env({"PIPELINE_BATCH_MAX_PART": "3"})


def test_the_processing_guarantee_is_a_typed_value_however_it_is_given() -> None:
    assert Settings().runtime.processing_guarantee is Guarantee.EXACTLY_ONCE
    alo = Settings.from_env({"PIPELINE_PROCESSING_GUARANTEE": "at_least_once"})
    assert (
        alo.runtime.processing_guarantee is Guarantee.AT_LEAST_ONCE
        and not alo.runtime.processing_guarantee.transactional
    )
    assert alo.to_env()["PIPELINE_PROCESSING_GUARANTEE"] == "at_least_once"
    replaced = Settings().replace(processing_guarantee="exactly_once")
    assert (
        replaced.runtime.processing_guarantee is Guarantee.EXACTLY_ONCE
        and replaced.runtime.processing_guarantee.transactional
    )
    with pytest.raises(ConfigError, match="use exactly_once or at_least_once"):
        Settings.from_env({"PIPELINE_PROCESSING_GUARANTEE": "exactly-once"})
