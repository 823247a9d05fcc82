"""The bench's CUDA part: it says why it skipped where there is no CUDA, and on a GPU its rows are real."""

from __future__ import annotations

import pytest

from pipeline.models.export import ExportedModel
from pipeline.models.tokenizer import load_tokenizer
from pipeline.tools.bench.baselines import texts
from pipeline.tools.bench.gpu import MIN_FP16_COSINE, cuda_problem, gpu_rows


def _cuda(exported: ExportedModel) -> bool:
    return cuda_problem(exported.onnx_path) is None


def test_without_cuda_the_gpu_part_says_it_skipped(exported: dict[str, ExportedModel]) -> None:
    embed = exported["embed"]
    if _cuda(embed):
        pytest.skip("CUDA is here: the GPU test below runs instead")
    lines: list[str] = []
    rows, notes = gpu_rows(embed.onnx_path, load_tokenizer(embed.path), texts(8), (1, 8), 0.1, lines.append)
    assert rows == {}
    assert notes and notes[0].startswith("gpu: skipped: no CUDA")
    assert any("skipped: no CUDA" in line for line in lines)


@pytest.mark.gpu
def test_on_cuda_io_binding_rows_and_a_checked_fp16(exported: dict[str, ExportedModel]) -> None:
    embed = exported["embed"]
    if not _cuda(embed):
        pytest.skip("needs CUDA")
    rows, notes = gpu_rows(embed.onnx_path, load_tokenizer(embed.path), texts(256), (1, 32), 0.5, print)
    assert rows["raw ort cuda fp32"]["throughput"] > 0
    assert any(note.startswith("fp16 parity") for note in notes)
    if "raw ort cuda fp16" in rows:
        assert f"need {MIN_FP16_COSINE}" in notes[0] and "passed" in notes[0]
