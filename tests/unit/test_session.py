"""Execution provider choice: checked against what the session really runs on."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.errors import ConfigError, ProviderError
from pipeline.models.batching import pad
from pipeline.models.export import ExportedModel
from pipeline.models.session import open_session
from pipeline.settings import Settings


def cuda_works() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


NO_GPU = pytest.mark.skipif(cuda_works(), reason="a GPU is present: the GPU providers load here")


def test_auto_runs_on_what_really_loaded(exported: dict[str, ExportedModel], model_settings: Settings) -> None:
    model = open_session(exported["qa"], model_settings)
    assert model.provider == model.session.get_providers()[0]
    if not cuda_works():
        assert model.provider == "CPUExecutionProvider"
    assert model.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert model.output_names == ("start_logits", "end_logits")


def test_threads_and_optimisation_are_set_explicitly(
    exported: dict[str, ExportedModel], model_settings: Settings
) -> None:
    settings = model_settings.replace(provider="cpu", ort_intra_threads=2, ort_inter_threads=1)
    options = open_session(exported["classify"], settings).session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@NO_GPU
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_a_named_gpu_provider_that_does_not_load_is_an_error(
    provider: str, exported: dict[str, ExportedModel], model_settings: Settings
) -> None:
    settings = model_settings.replace(provider=provider)
    with pytest.raises(ProviderError) as caught:
        open_session(exported["qa"], settings)
    message = str(caught.value)
    assert provider in message and "CPUExecutionProvider" in message
    assert all(p in message for p in ort.get_available_providers())  # lists what this build offers


def test_an_unknown_provider_is_a_config_error(exported: dict[str, ExportedModel], model_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="PIPELINE_PROVIDER='tpu'"):
        open_session(exported["qa"], model_settings.replace(provider="tpu"))


def test_run_returns_outputs_by_name(exported: dict[str, ExportedModel], model_settings: Settings) -> None:
    from pipeline.messages import Part

    model = open_session(exported["embed"], model_settings.replace(provider="cpu"))
    feeds = pad([Part("a", "embed", 0, 1, [101, 7592, 102])], 0, model.input_names)
    out = model.run(feeds)
    assert set(out) == {"embedding"} and out["embedding"].shape == (1, 384)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_works(), reason="needs CUDA")
@pytest.mark.parametrize("provider", ["cuda", "auto"])
def test_gpu_provider_loads_and_matches_cpu(
    provider: str, exported: dict[str, ExportedModel], model_settings: Settings
) -> None:
    from pipeline.messages import Part

    gpu = open_session(exported["qa"], model_settings.replace(provider=provider))
    cpu = open_session(exported["qa"], model_settings.replace(provider="cpu"))
    assert gpu.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    parts = [Part("a", "qa", 0, 1, list(range(100, 100 + n)), [0] * n) for n in (5, 40, 64)]
    feeds = pad(parts, 0, gpu.input_names)
    for name, value in gpu.run(feeds).items():
        assert np.abs(value - cpu.run(feeds)[name]).max() < 1e-3
