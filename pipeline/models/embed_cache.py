"""A disk cache of embedding matrices (faq's knowledge base), so a restarted infer member starts in time.

infer embeds every knowledge-base question, answer and title when it starts
(about 2-4 s of model runs on this machine for the shipped KBs): too slow for
a member killed with SIGKILL to be processing again within 3 s of its
restart (issue 7). The matrix depends only on the export (its key), the
provider that ran it, the texts and how they were cut and batched, so it is
stored under a hash of exactly those in ``<model_cache_dir>/embeddings/`` and
read back on the next start. A file that cannot be read is recomputed and
rewritten; writes are atomic (temporary file, then rename), so a member
killed mid-write leaves no half file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orjson

log = logging.getLogger("pipeline.models")

FORMAT = 1  # bump when what the key covers changes


def cache_key(model_key: str, provider: str, texts: Sequence[str], cut: dict[str, int]) -> str:
    """The hash naming one matrix: the export, its provider, the texts, and the cutting/batching settings."""
    payload = orjson.dumps(
        {"format": FORMAT, "model": model_key, "provider": provider, "texts": list(texts), "cut": cut},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(payload).hexdigest()[:32]


def cached_matrix(folder: Path | None, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The matrix stored under ``key`` in ``folder``, or ``compute()`` stored there first."""
    if folder is None:
        return compute()
    path = folder / f"{key}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("embedding cache %s unreadable (%s); recomputing", path, exc)
    matrix = compute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, matrix, allow_pickle=False)
        tmp.replace(path)
    except OSError as exc:  # a read-only cache is fine: the member just starts slower next time
        log.warning("could not store the embedding cache %s: %s", path, exc)
    return matrix
