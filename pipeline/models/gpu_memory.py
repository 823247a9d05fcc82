"""Members that share one GPU: a memory budget per member, and a check that the members fit.

ONNX Runtime's CUDA provider grows its memory arena by powers of two and
never gives memory back, so with no limit one busy member can take what the
next one needs to create its cuBLAS handle (issue 19: four infer members on
one H200). ``PIPELINE_GPU_MEM_LIMIT_MB`` caps each session's arena
(``gpu_mem_limit``) and grows it only by what is asked
(``arena_extend_strategy=kSameAsRequested``), so N members take at most N
budgets plus each process's own CUDA context and library handles
(``CONTEXT_MB``, measured on an H200: docs/performance.md).

The device's total memory is read through NVML (the driver's
``libnvidia-ml.so.1``, by ctypes): it makes no CUDA context and takes no GPU
memory, so the check itself costs nothing on the device. Where NVML is not
there (no driver, a CPU host) the total is unknown and nothing is checked.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import InferSettings, Settings

log = logging.getLogger("pipeline.models.gpu_memory")

MIB = 1 << 20
# What one process takes on the GPU besides its arena: the CUDA context,
# cuBLAS/cuDNN handles and workspaces, the kernels loaded (lazily). Measured
# with nvidia-smi per process on an H200: about 820 MiB (docs/performance.md, GPU); rounded up.
CONTEXT_MB = 1024


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def device_index() -> int | None:
    """The NVML index of the device a session gets (ORT's device 0: the first visible one); None if unknowable."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return 0
    first = visible.split(",")[0].strip()
    return int(first) if first.isdigit() else None  # a UUID or an empty list: not mapped here


def device_memory_mb(index: int | None = None) -> int | None:
    """Total memory of the GPU that sessions run on, in MiB, by NVML; None where that cannot be read."""
    index = device_index() if index is None else index
    if index is None:
        return None
    try:
        nvml: Any = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        handle = ctypes.c_void_p()
        memory = _Memory()
        if nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)) != 0:
            return None
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
            return None
        return int(memory.total // MIB)
    finally:
        nvml.nvmlShutdown()


def cuda_options(infer: InferSettings) -> dict[str, Any]:
    """The CUDA provider's options for one member's budget (none without a budget: ORT's defaults)."""
    if infer.gpu_mem_limit_mb <= 0:
        return {}
    return {"gpu_mem_limit": infer.gpu_mem_limit_mb * MIB, "arena_extend_strategy": "kSameAsRequested"}


def gpu_members(counts: Mapping[str, int], settings: Settings) -> int:
    """Members that open a session on the GPU: infer's unless its provider is the CPU, generate's on cuda."""
    members = 0
    if settings.infer.provider.strip().lower() != "cpu":
        members += counts.get("infer", 0)
    if settings.chat.generate_provider.strip().lower() == "cuda":
        members += counts.get("generate", 0)
    return members


def check_fit(members: int, infer: InferSettings, total_mb: int | None) -> str:
    """Raise ConfigError if ``members`` budgets (plus their contexts) exceed the GPU; say what was checked.

    ``total_mb`` None (not knowable here) or no GPU member: nothing to check.
    Without a budget, more than one GPU member is allowed but named as a risk:
    ORT's arena then grows with the batches until the device is full.
    """
    if not members or total_mb is None:
        return "gpu memory: not checked (no GPU member, or the device's total is not knowable here)"
    budget = infer.gpu_mem_limit_mb
    if budget <= 0:
        if members > 1:
            return (
                f"gpu memory: {members} GPU members share {total_mb} MiB with no budget each: set "
                "PIPELINE_GPU_MEM_LIMIT_MB so one member's arena cannot starve the others"
            )
        return f"gpu memory: one GPU member, no budget, {total_mb} MiB on the device"
    need = members * (budget + CONTEXT_MB)
    if need > total_mb:
        raise ConfigError(
            f"PIPELINE_GPU_MEM_LIMIT_MB={budget}: {members} GPU members × ({budget} + {CONTEXT_MB} MiB context) "
            f"= {need} MiB > the device's {total_mb} MiB; lower the budget or run fewer members per GPU"
        )
    return f"gpu memory: {members} GPU members × ({budget} + {CONTEXT_MB} MiB) = {need} of {total_mb} MiB"


def check_members(counts: Mapping[str, int], settings: Settings) -> None:
    """The check where members start (``pipeline up``, the bench): the GPU members of ``counts`` must fit."""
    members = gpu_members(counts, settings)
    if not members:
        return
    log.info("%s", check_fit(members, settings.infer, device_memory_mb()))
