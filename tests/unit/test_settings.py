"""Settings: the environment round trip that child processes rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings


def test_to_env_builds_the_same_settings_in_a_child() -> None:
    settings = Settings(prefix="t-", batch_max_parts=7, faq_min_score=0.5, model_cache_dir=Path("/tmp/m"))
    env = settings.to_env()
    assert env["PIPELINE_PREFIX"] == "t-"
    assert "PIPELINE_BOOTSTRAP_SERVERS" not in env  # defaults are not written
    assert Settings.from_env(env) == settings


def test_an_unknown_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_BATCH_MAX_PART"):
        Settings.from_env({"PIPELINE_BATCH_MAX_PART": "3"})
