"""The external-data copy of a graph (pipeline.models.mapped): written once, mapped, outputs bit-identical."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pipeline.models.mapped import mapped_graph


def tiny_encoder(path: Path) -> Path:
    """ids -> embedding rows (a 4000 x 64 table, as a word-embedding table) -> a MatMul."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((4000, 64)).astype(np.float32), "table")
    weight = numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32), "weight")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["rows"]),
            helper.make_node("MatMul", ["rows", "weight"], ["out"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "s", 16])],
        initializer=[table, weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def run(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["out"], {"ids": ids})[0])


def test_the_copy_keeps_weights_beside_the_graph_and_answers_the_same(tmp_path: Path) -> None:
    source = tiny_encoder(tmp_path / "model.onnx")
    mapped = mapped_graph(source, min_bytes=0)
    assert mapped != source and mapped.parent == source.parent
    data = mapped.with_name(mapped.name + ".data")
    assert data.is_file() and data.stat().st_size >= 4000 * 64 * 4
    assert mapped.stat().st_size < 10_000  # the graph alone
    ids = np.random.default_rng(1).integers(0, 4000, size=(3, 7)).astype(np.int64)
    assert np.array_equal(run(mapped, ids), run(source, ids))
    # Written once: the next start finds it and writes nothing.
    stamp = mapped.stat().st_mtime_ns
    assert mapped_graph(source, min_bytes=0) == mapped and mapped.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.mapped") and p.is_dir()]


def test_a_rewritten_source_gets_a_new_copy(tmp_path: Path) -> None:
    source = tiny_encoder(tmp_path / "model.onnx")
    first = mapped_graph(source, min_bytes=0)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 1_000_000_000))
    assert mapped_graph(source, min_bytes=0) != first


def test_a_small_graph_is_used_as_it_is(tmp_path: Path) -> None:
    source = tiny_encoder(tmp_path / "model.onnx")
    assert mapped_graph(source) == source  # 1 MB: under MIN_BYTES


def test_a_copy_that_cannot_be_written_falls_back_to_the_source(tmp_path: Path) -> None:
    from pipeline.models.mapped import mapped_name

    source = tiny_encoder(tmp_path / "model.onnx")
    (tmp_path / mapped_name(source)).mkdir()  # something in the way (a read-only cache fails alike)
    assert mapped_graph(source, min_bytes=0) == source
    ids = np.zeros((1, 2), dtype=np.int64)
    assert run(source, ids).shape == (1, 2, 16)
