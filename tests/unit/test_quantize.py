"""The int4 variant: Q4_1-grid weights kept exactly, others rounded; variants made once and compared with fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.models.export import ExportedModel, ensure_exported
from pipeline.models.quantize import BLOCK, agreement, compare, quantize_blocks, variant_file
from pipeline.settings import Settings
from tests.chat_engines import build_tiny_llama


def q4_1(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A (K, N) weight as GGUF Q4_1 stores it: per block of 32 along K, scale·q + min with q in 0..15."""
    rng = np.random.default_rng(seed)
    blocks = rows // BLOCK
    q = rng.integers(0, 16, (cols, blocks, BLOCK))
    q[:, :, 0], q[:, :, 1] = 0, 15  # the quantiser's min and max are on the grid
    scale = rng.uniform(0.001, 0.02, (cols, blocks, 1))
    low = rng.uniform(-0.2, 0.0, (cols, blocks, 1))
    return (scale * q + low).astype(np.float32).reshape(cols, rows).T.copy()


def two_matmuls(path: Path, first: np.ndarray, head: np.ndarray) -> Path:
    """x (batch, seq, K) · first · head, the second being the widest (so an lm head)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
         helper.make_node("MatMul", ["h", "head"], ["y"], name="head")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", first.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", head.shape[1]])],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(head, "head")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_weights_on_a_q4_1_grid_are_kept_exactly(tmp_path: Path) -> None:
    first, head = q4_1(64, 64), np.random.default_rng(1).normal(size=(64, 200)).astype(np.float32)
    source = two_matmuls(tmp_path / "m.onnx", first, head)
    exact, total = quantize_blocks(source, tmp_path / "q.onnx")
    assert exact == total == 64 * 64 // BLOCK
    x = np.random.default_rng(2).normal(size=(2, 3, 64)).astype(np.float32)
    assert np.abs(run(tmp_path / "q.onnx", x) - run(source, x)).max() < 1e-4
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 1 and ops[-1] == "MatMul", "the head stays float32"


def test_other_weights_are_rounded_to_4_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    first, head = rng.normal(size=(64, 64)).astype(np.float32), rng.normal(size=(64, 200)).astype(np.float32)
    source = two_matmuls(tmp_path / "m.onnx", first, head)
    exact, total = quantize_blocks(source, tmp_path / "q.onnx")
    assert exact < total
    x = rng.normal(size=(1, 4, 64)).astype(np.float32)
    got, want = run(tmp_path / "q.onnx", x), run(source, x)
    assert 0 < np.abs(got - want).max() < 0.1 * np.abs(want).max()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    root = tmp_path_factory.mktemp("quant")
    model = build_tiny_llama(root / "tiny-llama", seed=5, initializer_range=0.2)
    return ensure_exported(str(model), "decoder", Settings.of(model_cache_dir=root / "cache"))


def test_variants_are_made_once_and_compared_with_fp32_side_by_side(tiny: ExportedModel) -> None:
    for variant in ("int4", "int8"):
        made = variant_file(tiny, variant)
        assert (
            made.name == f"model.{variant}.onnx" and variant_file(tiny, variant).stat().st_mtime == made.stat().st_mtime
        )
        result = compare(tiny, variant, [[1, 2, 3, 4], [5, 6]], tokens=6, threads=1)
        assert 0.0 <= result.agree_prefix <= result.agree_all <= 1.0 and 0 <= result.identical <= 2
        assert result.variant_mb < result.fp32_mb and result.fp32_tokens_per_s > 0 < result.variant_tokens_per_s
        assert f"{variant} vs fp32 on 2 prompts × 6 tokens" in result.render()


def test_agreement_counts_the_prefix_and_every_position() -> None:
    assert agreement([[1, 2, 3, 4]], [[1, 2, 9, 4]]) == (0.5, 0.75, 0)
    assert agreement([[1, 2], [3]], [[1, 2], [3]]) == (1.0, 1.0, 2)
