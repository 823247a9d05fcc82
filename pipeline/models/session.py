"""ONNX Runtime sessions on a checked execution provider.

``onnxruntime.get_available_providers()`` lists what this onnxruntime *build*
supports, not what loads on this machine: a GPU build lists TensorRT and CUDA
on a host without a GPU and then quietly falls back to CPU when a session is
created. So the provider is decided by creating the session and asking it
(``session.get_providers()``):

* ``auto`` asks for TensorRT, then CUDA, then CPU, and takes what loaded;
  on a host without an NVIDIA device it asks for the CPU only: a GPU build
  otherwise tries to load its TensorRT and CUDA libraries for every session
  and fails, which cost a restarting infer member 0.2-0.6 s per session here;
* a named provider (``tensorrt``, ``cuda``, ``cpu``) that did not load is a
  :class:`~pipeline.errors.ProviderError` listing what is available and what
  actually loaded: asking for a GPU and silently getting a CPU is never fine.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pipeline.errors import ConfigError, ExportError, ProviderError
from pipeline.models.export import ExportedModel, ModelMeta
from pipeline.models.gpu_memory import check_fit, cuda_options, device_memory_mb
from pipeline.models.mapped import mapped_graph
from pipeline.settings import InferSettings, Settings

log = logging.getLogger("pipeline.models.session")

PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
# What a session may fall back to for the nodes its first provider cannot run.
_FALLBACKS: dict[str, tuple[str, ...]] = {"tensorrt": ("cuda", "cpu"), "cuda": ("cpu",), "cpu": ()}


@dataclass
class OrtModel:
    """An ONNX Runtime session with the names and metadata of its export."""

    session: ort.InferenceSession
    meta: ModelMeta
    provider: str  # the provider that runs the graph, e.g. "CPUExecutionProvider"
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; ``feeds`` may hold more inputs than the graph takes."""
        outputs = self.session.run(list(self.output_names), {name: feeds[name] for name in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))


def open_session(exported: ExportedModel, settings: Settings) -> OrtModel:
    """A session for ``exported`` on the provider ``settings.infer.provider`` asks for, checked."""
    wanted = settings.infer.provider.strip().lower()
    if wanted != "auto" and wanted not in PROVIDERS:
        raise ConfigError(f"PIPELINE_PROVIDER={settings.infer.provider!r}: use auto, {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    if wanted == "auto":
        candidates = [name for name in AUTO_ORDER if PROVIDERS[name] in available and (name == "cpu" or gpu_present())]
    elif PROVIDERS[wanted] not in available:
        raise ProviderError(
            f"provider {wanted} ({PROVIDERS[wanted]}) is not in this onnxruntime build; "
            f"available: {', '.join(available)}",
            where=exported.meta.model,
        )
    else:
        candidates = [wanted, *(f for f in _FALLBACKS[wanted] if PROVIDERS[f] in available)]
    if any(name != "cpu" for name in candidates) and gpu_present():
        # One member's budget must fit the device (pipeline up checks all of them together).
        log.info("%s", check_fit(1, settings.infer, device_memory_mb()))
        _preload_gpu_libraries()

    session = _create(exported, settings, candidates, strict=wanted != "auto")
    loaded = session.get_providers()
    provider = loaded[0]
    if wanted != "auto" and provider != PROVIDERS[wanted]:
        raise ProviderError(
            f"provider {wanted} ({PROVIDERS[wanted]}) did not load; the session runs on {', '.join(loaded)}; "
            f"available in this onnxruntime build: {', '.join(available)}",
            where=exported.meta.model,
        )
    log.info(
        "%s (%s): running on %s (asked for %s; loaded %s; this build offers %s)",
        exported.meta.model, exported.meta.task, provider, wanted, ", ".join(loaded), ", ".join(available),
    )  # fmt: skip
    return OrtModel(
        session=session,
        meta=exported.meta,
        provider=provider,
        input_names=tuple(i.name for i in session.get_inputs()),
        output_names=tuple(o.name for o in session.get_outputs()),
    )


def gpu_present() -> bool:
    """Whether an NVIDIA driver's device is here (Linux, or WSL's /dev/dxg): without one no GPU provider loads."""
    return Path("/dev/nvidiactl").exists() or Path("/dev/dxg").exists()


def session_options(settings: Settings) -> ort.SessionOptions:
    """Threads set explicitly (ORT's default is one per core, per session) and full graph optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads(settings.infer)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.infer.ort_spinning else "0")
    options.inter_op_num_threads = settings.infer.ort_inter_threads
    if settings.infer.ort_inter_threads > 1:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def intra_threads(infer: InferSettings, cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """``ort_intra_threads``, or with 0: the cores this process may use, less one for its own loop.

    The member's loop (polling, decoding, the transaction) and, under
    ``pipeline up``, the other stages and the broker need a core while the model
    runs; measured on 2 cores, one thread made as many texts a second as two
    for 20 % less CPU per text (docs/performance.md). The cores are the CPU
    affinity, capped by a cgroup CPU quota (a container's limit).
    """
    if infer.ort_intra_threads > 0:
        return infer.ort_intra_threads
    return max(1, available_cores(cgroup) - 1)


def available_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 quota ("max" or absent: none)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity is the limit
    return cores


def _create(
    exported: ExportedModel, settings: Settings, candidates: list[str], *, strict: bool
) -> ort.InferenceSession:
    """Create the session; in auto mode a provider that crashes creation is skipped for the next."""
    remaining = list(candidates)
    while True:
        providers = [(PROVIDERS[name], _provider_options(name, exported, settings)) for name in remaining]
        # On the CPU the weights are mapped from a file beside the graph, not copied (pipeline.models.mapped).
        graph = mapped_graph(exported.onnx_path) if remaining == ["cpu"] else exported.onnx_path
        chatter = io.StringIO()
        try:
            # onnxruntime prints its provider fallbacks to stdout; keep them in the log instead.
            with contextlib.redirect_stdout(chatter):
                return ort.InferenceSession(str(graph), session_options(settings), providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind types, not one base class
            if strict or len(remaining) <= 1:
                # On the CPU alone a failure is the model file's fault, not the provider's.
                error = ExportError if remaining == ["cpu"] else ProviderError
                raise error(
                    f"cannot create a session with {', '.join(PROVIDERS[n] for n in remaining)}: {exc}",
                    where=str(exported.onnx_path),
                ) from exc
            log.warning("%s failed to start (%s); trying %s", PROVIDERS[remaining[0]], exc, remaining[1])
            remaining.pop(0)
        finally:
            if chatter.getvalue().strip():
                log.debug("onnxruntime: %s", " ".join(chatter.getvalue().split()))


def _provider_options(name: str, exported: ExportedModel, settings: Settings) -> dict[str, Any]:
    if name == "cuda":
        return cuda_options(settings.infer)  # the member's GPU memory budget, if one is set
    if name != "tensorrt":
        return {}
    # TensorRT builds an engine per input shape unless it is given a shape range;
    # one profile from a single token to the largest batch keeps it to one build,
    # cached next to the model so a restart does not build it again. fp16 stays
    # off: answers must match the PyTorch model (the correctness oracle).
    names = exported.meta.input_names
    rows, length = settings.infer.batch_max_parts, exported.meta.max_length

    def shapes(batch: int, seq: int) -> str:
        return ",".join(f"{n}:{batch}x{seq}" for n in names)

    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(exported.path / "trt"),
        "trt_profile_min_shapes": shapes(1, 1),
        "trt_profile_opt_shapes": shapes(min(rows, 16), min(length, 128)),
        "trt_profile_max_shapes": shapes(rows, length),
    }


def _preload_gpu_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia pip packages when present, so the GPU providers find them.

    Only where an NVIDIA driver is present: elsewhere it would map gigabytes of
    libraries that no provider can use.
    """
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            ort.preload_dlls()
    except Exception as exc:  # missing libraries are reported by the provider that needs them
        log.debug("preloading GPU libraries failed: %s", exc)
    if chatter.getvalue().strip():
        log.debug("preloading GPU libraries: %s", chatter.getvalue().strip())


def engine_providers(settings: Settings) -> list[Any]:
    """The generation engine's providers: ``PIPELINE_GENERATE_PROVIDER`` (cpu, or cuda alone).

    ``cuda`` asks for CUDA only, never CUDA with the CPU behind it: a CUDA that
    failed to load would otherwise run every reply on the CPU without a word.
    A build without the CUDA provider is a :class:`ProviderError` here, one
    whose CUDA did not load is one when the session starts (:func:`check_loaded`).
    """
    if settings.chat.generate_provider.strip().lower() != "cuda":
        return [PROVIDERS["cpu"]]
    available = ort.get_available_providers()
    if PROVIDERS["cuda"] not in available:
        raise ProviderError(
            f"PIPELINE_GENERATE_PROVIDER=cuda: {PROVIDERS['cuda']} is not in this onnxruntime build; "
            f"available: {', '.join(available)}",
            where=settings.chat.chat_model,
        )
    if gpu_present():
        _preload_gpu_libraries()
    return [(PROVIDERS["cuda"], cuda_options(settings.infer))]


def check_loaded(session: ort.InferenceSession, providers: Sequence[Any], where: str) -> str:
    """The provider ``session`` runs on; a :class:`ProviderError` if it is not the first one asked for.

    ONNX Runtime falls back to the CPU when a GPU provider fails to load (it
    only logs a warning); asking for a GPU and silently getting a CPU is never fine.
    """
    first = providers[0] if providers else PROVIDERS["cpu"]
    wanted = first[0] if isinstance(first, tuple) else str(first)
    loaded = session.get_providers()
    if loaded[0] != wanted:
        raise ProviderError(
            f"provider {wanted} did not load; the session runs on {', '.join(loaded)}; "
            f"available in this onnxruntime build: {', '.join(ort.get_available_providers())}",
            where=where,
        )
    return wanted


# -- plain sessions (benchmarks, quantisation checks) ------------------------------


def ort_session(onnx_path: Path, threads: int, providers: Sequence[Any] = ("CPUExecutionProvider",)) -> Any:
    """A plain session as a user of ONNX Runtime would make it: ``threads`` intra-op threads, full optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=list(providers))


def feeds(tokenizer: Any, batch: Sequence[str], input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's inputs for ``batch``, padded to its longest text, as int64 arrays."""
    encoded = tokenizer(list(batch), padding=True, truncation=True, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in input_names if name in encoded} | {
        name: np.zeros_like(encoded["input_ids"], dtype=np.int64)
        for name in input_names
        if name not in encoded  # token_type_ids for a tokenizer that gives none
    }
