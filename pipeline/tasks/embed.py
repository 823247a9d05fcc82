"""Sentence embedding of a text of any length.

split: token chunks of at most ``chunk_tokens`` tokens (special tokens
included). postprocess: each chunk's mean token embedding (the graph pools
with the attention mask, so padding never counts) and its token count.
merge: the token-weighted mean of the chunk embeddings, which equals the mean
over every token of the text, L2-normalised.

Between infer and merge a chunk's embedding travels as little-endian float32
bytes (base64 in the result's JSON: 2 KB for 384 dimensions), not as 384 JSON
numbers (about 7.5 KB): writing and parsing those numbers was most of what a
result cost infer and merge, and the broker carried them four times
(results, and merge's state). The model computes float32, so nothing is lost.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.messages import Part, Result
from pipeline.tasks.base import AnswerResult, ChunkedTask, ModelOutputs, PartOutput, Runtime, rows, usable


class EmbedTask(ChunkedTask):
    name: str = "embed"

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]:
        embeddings = outputs["embedding"]

        def each(row: int, part: Part) -> PartOutput:
            return {"embedding": pack_vector(embeddings[row]), "tokens": len(part.input_ids)}

        return rows(parts, each)

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult:
        present = usable(results)
        if not present:
            return {"embedding": [], "dim": 0, "tokens": 0}
        tokens = [r.output["tokens"] for r in present]
        if len(present) == 1:  # most texts are one chunk: its mean is itself
            mean = unpack_vector(present[0].output["embedding"]).astype(np.float64)
        else:
            vectors = np.array([unpack_vector(r.output["embedding"]) for r in present], dtype=np.float64)
            weights = np.array(tokens, dtype=np.float64)
            mean = (vectors * weights[:, None]).sum(axis=0) / max(weights.sum(), 1.0)
        embedding = mean / max(float(np.sqrt(mean @ mean)), 1e-12)  # l2_normalise of one vector, without its overhead
        return {"embedding": embedding.tolist(), "dim": int(embedding.size), "tokens": int(sum(tokens))}


FLOAT32 = np.dtype("<f4")


def pack_vector(vector: np.ndarray) -> bytes:
    """A vector as little-endian float32 bytes (the result's JSON carries them base64-encoded)."""
    return np.ascontiguousarray(vector, dtype=FLOAT32).tobytes()


def unpack_vector(value: Any) -> np.ndarray:
    """What :func:`pack_vector` wrote, after the JSON round trip (base64 text); a list of numbers as well.

    A list is what infer wrote before the bytes (a result still on the topic
    when a newer merge starts). Anything else is a :class:`ValueError`, which
    merge answers as ``model_error``.
    """
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, bytes | str):
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else value
        if len(raw) % FLOAT32.itemsize:
            raise ValueError(f"an embedding of {len(raw)} bytes is not float32 values")
        return np.frombuffer(raw, dtype=FLOAT32)
    raise ValueError(f"an embedding must be base64 float32 bytes or a list of numbers, not {type(value).__name__}")
