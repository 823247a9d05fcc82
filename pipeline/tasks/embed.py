"""Sentence embedding of a text of any length.

split: token chunks of at most ``chunk_tokens`` tokens (special tokens
included). postprocess: each chunk's mean token embedding (the graph pools
with the attention mask, so padding never counts) and its token count.
merge: the token-weighted mean of the chunk embeddings, which equals the mean
over every token of the text, L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.messages import Part, Result
from pipeline.tasks.base import AnswerResult, ChunkedTask, ModelOutputs, PartOutput, Runtime, l2_normalise, rows, usable


class EmbedTask(ChunkedTask):
    name: str = "embed"

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]:
        embeddings = outputs["embedding"]

        def each(row: int, part: Part) -> PartOutput:
            return {"embedding": embeddings[row].tolist(), "tokens": len(part.input_ids)}

        return rows(parts, each)

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult:
        present = usable(results)
        if not present:
            return {"embedding": [], "dim": 0, "tokens": 0}
        vectors = np.array([r.output["embedding"] for r in present], dtype=np.float64)
        weights = np.array([r.output["tokens"] for r in present], dtype=np.float64)
        mean = (vectors * weights[:, None]).sum(axis=0) / max(weights.sum(), 1.0)
        embedding = l2_normalise(mean)
        return {"embedding": embedding.tolist(), "dim": int(embedding.size), "tokens": int(weights.sum())}
