"""``pipeline model export``: where the ONNX went, its verified diff, cache or not."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.models.export import ExportedModel
from pipeline.settings import Settings


def test_export_reports_a_cached_model(
    exported: dict[str, ExportedModel], model_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["model", "export", "--task", "classify", "--model", model_settings.models.classify_model]
    assert main([*argv, "--cache-dir", str(model_settings.models.model_cache_dir)]) == 0
    out = capsys.readouterr().out
    assert str(exported["classify"].onnx_path) in out
    assert "max abs diff" in out and "from cache" in out and "negative, neutral, positive" in out


def test_export_of_a_missing_model_fails_with_a_message(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "export", "--task", "qa", "--model", "/no/such/model/dir", "--cache-dir", str(tmp_path)]) == 1
    assert "not a directory" in capsys.readouterr().err
