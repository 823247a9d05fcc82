"""Members share a GPU: building a stage imports no jax and initialises no torch.cuda (issue 19).

On an H200 with jax installed (as on most GPU images), ``bm25s`` imported
jax, and jax's first use preallocated 75 % of the GPU in the first infer
member: three more members failed ``cublasCreate`` and answered only
``model_error``. No GPU is needed to catch that here: each stage is built in a
fresh process (as a member builds it) with a stand-in ``jax`` package first
on its path, so any import of jax, by any library, shows in ``sys.modules``
whether or not the real jax is installed. torch.cuda's lazy initialisation
(the call that makes a CUDA context) is wrapped as torch.cuda loads, so a
call shows even on a host where it would fail.

Also here: the GPU memory budget's provider options and the members-fit check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError, ProviderError
from pipeline.models.export import ensure_exported
from pipeline.models.gpu_memory import CONTEXT_MB, check_fit, cuda_options, gpu_members
from pipeline.models.session import gpu_present
from pipeline.settings import PROJECT_ROOT, Settings

STAGES = ("filter", "split", "infer", "merge", "generate")

# A stand-in jax: importable, and enough of jax.lax for bm25s's import-time top_k.
FAKE_JAX = {
    "jax/__init__.py": "from . import lax\n",
    "jax/lax.py": textwrap.dedent(
        """
        import numpy as np

        def top_k(values, k):
            order = np.argsort(values)[::-1][:k]
            return np.asarray(values)[order], order
        """
    ),
}

# Run in the child: a finder that wraps torch.cuda._lazy_init as torch.cuda
# loads (torch is not imported for it), then each stage built in turn, with
# what it brought in reported after each.
PROBE = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys

    calls = []

    class TorchCudaProbe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "torch.cuda":
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                real = module._lazy_init

                def lazy_init(*args, **kwargs):
                    calls.append("torch.cuda._lazy_init")
                    return real(*args, **kwargs)

                module._lazy_init = lazy_init

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, TorchCudaProbe())
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        import torch
        try:
            torch.cuda.init()
        except Exception:
            pass  # no GPU here: the attempt is what counts
        print(json.dumps({"self-test": {"cuda_calls": calls}}))
        sys.exit(0)

    from pipeline import stages
    from pipeline.settings import Settings

    settings = Settings.from_env()
    seen = {}
    for stage in sys.argv[1:]:
        stages.build(stage, settings)
        torch = sys.modules.get("torch")
        seen[stage] = {
            "jax": sorted(m for m in sys.modules if m == "jax" or m.startswith(("jax.", "jaxlib"))),
            "cuda_calls": list(calls),
            "cuda_initialized": bool(torch is not None and torch.cuda.is_initialized()),
        }
    print(json.dumps(seen))
    """
)


def run_probe(tmp_path: Path, env: dict[str, str], *args: str) -> dict[str, dict[str, Any]]:
    fake = tmp_path / "fake-jax"
    for name, text in FAKE_JAX.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text)
    child = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    child.update(env)
    child["PYTHONPATH"] = os.pathsep.join([str(fake), str(PROJECT_ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=child, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def stage_settings(model_settings: Settings, exported: object, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The tiny models of every task (faq with the shop KB, so bm25s loads) and a tiny decoder for generate."""
    from tests.chat_engines import build_tiny_llama

    llama = build_tiny_llama(tmp_path_factory.mktemp("gpu-sharing") / "tiny-llama")
    settings = model_settings.replace(chat_model=str(llama))
    ensure_exported(str(llama), "decoder", settings)  # exported here (torch), so the child only loads it
    return settings


def test_building_every_stage_imports_no_jax_and_initialises_no_torch_cuda(
    stage_settings: Settings, tmp_path: Path
) -> None:
    seen = run_probe(tmp_path, stage_settings.to_env(secrets=True), *STAGES)
    assert list(seen) == list(STAGES)
    for stage, found in seen.items():
        assert not found["jax"], f"building {stage} imported jax ({found['jax'][:3]}): on a GPU it takes 75 %"
        assert not found["cuda_calls"] and not found["cuda_initialized"], f"building {stage} initialised torch.cuda"


def test_the_probe_sees_a_torch_cuda_initialisation(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    seen = run_probe(tmp_path, {}, "--self-test")
    assert seen["self-test"]["cuda_calls"] == ["torch.cuda._lazy_init"]


def test_bm25s_still_scores_and_jax_stays_importable(tmp_path: Path) -> None:
    """The hiding is scoped to bm25s's import: jax (here the stand-in) imports afterwards."""
    fake = tmp_path / "fake-jax"
    for name, text in FAKE_JAX.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text)
    code = textwrap.dedent(
        """
        import sys
        from pipeline.tasks.faq.retrieval import Lexical
        lexical = Lexical(["refund my order", "track a parcel"])
        assert "jax" not in sys.modules
        assert lexical.raw(["refund"])[0, 0] > 0 and lexical.raw(["refund"])[0, 1] == 0
        import bm25s.selection, jax
        print(bm25s.selection.JAX_IS_AVAILABLE, jax.__file__.startswith(sys.argv[1]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(PROJECT_ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code, str(fake)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True"]


def test_a_budget_sets_the_cuda_arena_limit_and_its_growth() -> None:
    assert cuda_options(Settings().infer) == {}
    assert cuda_options(Settings.of(gpu_mem_limit_mb=2048).infer) == {
        "gpu_mem_limit": 2048 << 20,
        "arena_extend_strategy": "kSameAsRequested",
    }
    with pytest.raises(ConfigError, match="PIPELINE_GPU_MEM_LIMIT_MB"):
        Settings.of(gpu_mem_limit_mb=-1).check()
    with pytest.raises(ConfigError, match="PIPELINE_GENERATE_PROVIDER"):
        Settings.of(generate_provider="tpu").check()


def test_the_chat_engine_runs_where_generate_provider_says(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from pipeline.models.session import engine_providers

    assert engine_providers(Settings()) == ["CPUExecutionProvider"]
    budget = Settings.of(generate_provider="cuda", gpu_mem_limit_mb=1024)
    gpu_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu_build)
    # CUDA alone: with the CPU behind it a CUDA that failed to load ran every reply on the CPU, silently.
    assert engine_providers(budget) == [
        ("CUDAExecutionProvider", {"gpu_mem_limit": 1024 << 20, "arena_extend_strategy": "kSameAsRequested"}),
    ]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="GENERATE_PROVIDER=cuda: CUDAExecutionProvider is not in this onnxruntime"):
        engine_providers(budget)


def test_a_provider_that_did_not_load_is_an_error_not_a_cpu_session(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from pipeline.models.session import check_loaded

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert check_loaded(cpu, ["CPUExecutionProvider"], str(path)) == "CPUExecutionProvider"
    # A session that asked for CUDA and runs on the CPU (what ONNX Runtime does when CUDA fails to load).
    with pytest.raises(ProviderError, match=r"provider CUDAExecutionProvider did not load; the session runs on CPU"):
        check_loaded(cpu, [("CUDAExecutionProvider", {})], str(path))
    if "CUDAExecutionProvider" in ort.get_available_providers() and not gpu_present():
        # The real fall back, here: a GPU build on a host with no NVIDIA device.
        asked = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        with pytest.raises(ProviderError, match="did not load"):
            check_loaded(asked, ["CUDAExecutionProvider"], str(path))


def test_members_must_fit_the_device() -> None:
    budget = Settings.of(gpu_mem_limit_mb=30_000, generate_provider="cuda")
    counts = {"filter": 2, "split": 2, "infer": 4, "merge": 2, "generate": 1}
    assert gpu_members(counts, budget) == 5
    assert gpu_members(counts, budget.replace(provider="cpu", generate_provider="cpu")) == 0
    h200 = 143_771
    assert "of 143771 MiB" in check_fit(4, budget.infer, h200)
    with pytest.raises(ConfigError, match=r"5 GPU members × \(30000 \+ 1024 MiB context\)"):
        check_fit(5, budget.infer, h200)
    assert 4 * (30_000 + CONTEXT_MB) <= h200 < 5 * (30_000 + CONTEXT_MB)
    assert "not checked" in check_fit(4, budget.infer, None)  # a CPU host: the total is not knowable
    assert "no budget" in check_fit(4, Settings().infer, h200)
