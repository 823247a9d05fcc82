"""The bench on CUDA: raw ONNX Runtime with I/O binding, fp32 and an fp16 export checked against it.

Runs only where a CUDA session really loads (``onnxruntime`` lists CUDA in
any GPU build, with or without a GPU, so a session is made and asked);
elsewhere :func:`cuda_problem` says why and the bench prints that it skipped
this part.

* **I/O binding** (onnxruntime.ai/docs/performance/tune-performance/iobinding):
  each batch's inputs are uploaded once as ``OrtValue`` on the device, and
  outputs are bound to the device too, so a timed run is the graph alone,
  not host↔device copies; the copy back is timed separately, once per batch,
  as a server has to make it.
* **fp16**: ``model.fp16.onnx`` is made from the fp32 export with
  onnxruntime's ``convert_float_to_float16`` (``keep_io_types``: int64 ids in,
  float32 embedding out, as fp32). It is used only if its embeddings agree with
  fp32's on the bench texts (cosine >= :data:`MIN_FP16_COSINE` each).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.session import feeds
from pipeline.tools.bench.baselines import Sweep

MIN_FP16_COSINE = 0.999
FP16_FILE = "model.fp16.onnx"
Say = Callable[[str], None]


def cuda_problem(onnx_path: Path) -> str | None:
    """None when a CUDA session loads here; otherwise why not, in a few words."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "no CUDA: this onnxruntime build has no CUDAExecutionProvider"
    if not Path("/dev/nvidiactl").exists():
        return "no CUDA: no NVIDIA driver on this machine"
    try:
        ort.preload_dlls()
        session = ort.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider"])
    except Exception as exc:  # onnxruntime raises pybind types without a common base
        return f"no CUDA: a CUDA session does not load ({exc})"
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return f"no CUDA: the session fell back to {session.get_providers()[0]}"
    return None


def fp16_export(onnx_path: Path) -> Path:
    """``model.fp16.onnx`` next to ``onnx_path``, made once (atomically)."""
    out = onnx_path.with_name(FP16_FILE)
    if out.is_file():
        return out
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def cuda_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def embed_all(session: Any, tokenizer: Any, corpus: Sequence[str], size: int = 64) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, feeds(tokenizer, corpus[i : i + size], names))[0]
                           for i in range(0, len(corpus), size)])  # fmt: skip


def fp16_parity(fp32: Any, fp16: Any, tokenizer: Any, corpus: Sequence[str]) -> tuple[float, float]:
    """(lowest cosine, largest absolute difference) between the two sessions' embeddings of ``corpus``."""
    a, b = embed_all(fp32, tokenizer, corpus), embed_all(fp16, tokenizer, corpus)
    cosines = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cosines.min()), float(np.abs(a - b).max())


def bound_sweep(name: str, session: Any, tokenizer: Any, corpus: Sequence[str], batch_sizes: Sequence[int],
                seconds: float, say: Say) -> Sweep:  # fmt: skip
    """Texts per second with inputs already on the device and outputs bound there, plus the copy back."""
    import onnxruntime as ort

    names = [i.name for i in session.get_inputs()]
    output = session.get_outputs()[0].name
    sweep = Sweep(name)
    for size in batch_sizes:
        uploaded = []
        for i in range(0, min(len(corpus) - size + 1, 32 * size), size):
            batch = feeds(tokenizer, corpus[i : i + size], names)
            uploaded.append({k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for k, v in batch.items()})
        if not uploaded:
            continue
        binding = session.io_binding()

        def run(values: dict[str, Any], binding: Any = binding) -> int:
            for key, value in values.items():
                binding.bind_ortvalue_input(key, value)
            binding.bind_output(output, "cuda", 0)
            session.run_with_iobinding(binding)
            binding.copy_outputs_to_cpu()  # a server needs the embedding on the host
            return int(values[names[0]].shape()[0])

        run(uploaded[0])
        done, began, index = 0, time.perf_counter(), 0
        while time.perf_counter() - began < seconds or index < 3:
            done += run(uploaded[index % len(uploaded)])
            index += 1
        sweep.per_batch[size] = done / (time.perf_counter() - began)
        say(f"  {name}: batch {size:>3}: {sweep.per_batch[size]:8.1f} texts/s")
    return sweep


def gpu_rows(onnx_path: Path, tokenizer: Any, corpus: Sequence[str], batch_sizes: Sequence[int], seconds: float,
             say: Say) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """The CUDA rows (fp32, and fp16 when its parity check passes) and notes; empty rows and why when no CUDA."""
    problem = cuda_problem(onnx_path)
    if problem is not None:
        say(f"  gpu: skipped: {problem}")
        return {}, [f"gpu: skipped: {problem}"]
    rows: dict[str, Any] = {}
    fp32 = cuda_session(onnx_path)
    sweep = bound_sweep("raw ort cuda fp32", fp32, tokenizer, corpus, batch_sizes, seconds, say)
    rows["raw ort cuda fp32"] = {"throughput": sweep.best, "batch": sweep.best_batch, "per_batch": sweep.per_batch}
    fp16 = cuda_session(fp16_export(onnx_path))
    cosine, diff = fp16_parity(fp32, fp16, tokenizer, corpus[:512])
    verdict = "passed" if cosine >= MIN_FP16_COSINE else "FAILED"
    notes = [
        f"fp16 parity {verdict}: lowest cosine to fp32 {cosine:.5f} (need {MIN_FP16_COSINE}), max |diff| {diff:.2e}"
    ]
    say(f"  {notes[0]}")
    if cosine >= MIN_FP16_COSINE:
        half = bound_sweep("raw ort cuda fp16", fp16, tokenizer, corpus, batch_sizes, seconds, say)
        rows["raw ort cuda fp16"] = {"throughput": half.best, "batch": half.best_batch, "per_batch": half.per_batch}
    return rows, notes
