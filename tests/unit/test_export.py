"""ONNX export: verified against PyTorch, cached by content, published atomically."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.errors import ConfigError, ExportError
from pipeline.models import export
from pipeline.models.export import META_FILE, MODEL_FILE, ExportedModel, ModelMeta, cache_key, ensure_exported
from pipeline.settings import Settings
from tests.tiny_models import CLASSIFIER_LABELS, MINILM


def test_each_kind_exports_verified_with_its_inputs_and_outputs(exported: dict[str, ExportedModel]) -> None:
    expected_outputs = {"qa": ("start_logits", "end_logits"), "classify": ("logits",), "embed": ("embedding",)}
    for kind, model in exported.items():
        meta = model.meta
        assert meta.task == kind
        assert meta.output_names == expected_outputs[kind]
        assert meta.input_names == ("input_ids", "attention_mask", "token_type_ids")
        assert 0 <= meta.max_diff <= 1e-4
        assert meta.max_position_embeddings == 512 and meta.max_length == 512 and meta.pad_token_id == 0
        assert model.onnx_path.is_file() and (model.path / "tokenizer.json").is_file()
        session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == list(expected_outputs[kind])
    assert exported["classify"].meta.labels == CLASSIFIER_LABELS
    assert exported["qa"].meta.labels is None


def test_exported_graph_takes_any_batch_and_length(exported: dict[str, ExportedModel]) -> None:
    session = ort.InferenceSession(str(exported["qa"].onnx_path), providers=["CPUExecutionProvider"])
    for rows, length in ((1, 1), (5, 7), (2, 300)):
        ids = np.ones((rows, length), dtype=np.int64)
        start, end = session.run(None, {"input_ids": ids, "attention_mask": ids, "token_type_ids": ids * 0})
        assert start.shape == end.shape == (rows, length)


def test_a_second_call_comes_from_the_cache(exported: dict[str, ExportedModel], model_settings: Settings) -> None:
    again = ensure_exported(model_settings.models.qa_model, "qa", model_settings)
    assert again.from_cache and again.path == exported["qa"].path and again.meta == exported["qa"].meta
    # faq and embed share the sentence encoder's export
    assert ensure_exported(str(MINILM), "faq", model_settings).path == exported["embed"].path


def test_the_cache_key_follows_the_model_files(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "model.safetensors").write_bytes(b"x" * 10)
    key = cache_key(str(model), model, "qa")
    assert cache_key(str(model), model, "qa") == key
    assert cache_key(str(model), model, "classify") != key
    (model / "model.safetensors").write_bytes(b"y" * 11)  # new weights
    assert cache_key(str(model), model, "qa") != key
    key = cache_key(str(model), model, "qa")
    stat = (model / "config.json").stat()
    (model / "config.json").write_text('{"a": 2}')  # same size; restore the mtime: content still counts
    os.utime(model / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key(str(model), model, "qa") != key


def fake_export(calls: list[str], delay_s: float = 0.0):  # type: ignore[no-untyped-def]
    def run(source: Path, model: str, kind: str, key: str, out: Path) -> None:
        calls.append(model)
        time.sleep(delay_s)
        (out / MODEL_FILE).write_bytes(b"onnx")
        ModelMeta(kind, model, ("input_ids",), ("logits",), None, 512, 512, 0, 0.0, key).save(out)

    return run


def test_racing_processes_export_once_and_share_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    calls: list[str] = []
    monkeypatch.setattr(export, "run_export", fake_export(calls, delay_s=0.3))
    settings = Settings.of(model_cache_dir=tmp_path / "cache")
    results: list[ExportedModel] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_exported(str(model), "classify", settings)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len({r.path for r in results}) == 1 and sorted(r.from_cache for r in results) == [False, True, True]
    # nothing half-written is left behind
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [results[0].path.name]


def test_force_replaces_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    calls: list[str] = []
    monkeypatch.setattr(export, "run_export", fake_export(calls))
    settings = Settings.of(model_cache_dir=tmp_path / "cache")
    first = ensure_exported(str(model), "qa", settings)
    (first.path / "stale").write_text("from the old export")
    second = ensure_exported(str(model), "qa", settings, force=True)
    assert len(calls) == 2 and not second.from_cache and second.path == first.path
    assert not (second.path / "stale").exists() and (second.path / META_FILE).is_file()


def test_a_failing_export_says_why(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ExportError, match=r"exporting .*not-a-model for embed failed \(exit \d\)"):
        ensure_exported(str(empty), "embed", Settings.of(model_cache_dir=tmp_path / "cache"))
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_a_verification_mismatch_is_an_export_error(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.models import convert

    monkeypatch.setattr(convert, "verify", lambda *args: 0.25)
    with pytest.raises(ExportError, match=r"differs from PyTorch by up to 2\.500e-01"):
        convert.convert(tiny_models["classify"], "tiny", "classify", tmp_path)


def test_unknown_tasks_and_missing_models_are_config_errors(tmp_path: Path) -> None:
    settings = Settings.of(model_cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown model task 'translate'"):
        ensure_exported(str(tmp_path), "translate", settings)
    with pytest.raises(ConfigError, match="no model configured"):
        ensure_exported("", "qa", settings)
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_exported(str(tmp_path / "missing" / "model" / "dir"), "qa", settings)
