"""Text classification of a text of any length.

split: token chunks of at most ``chunk_tokens`` tokens (special tokens
included). postprocess: each chunk's logits. merge: the mean of the chunk
logits, softmax, and the label of the largest probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.messages import Part, Result
from pipeline.tasks.base import AnswerResult, ChunkedTask, ModelOutputs, PartOutput, Runtime, rows, softmax, usable


class ClassifyTask(ChunkedTask):
    name: str = "classify"

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]:
        logits = outputs["logits"]
        labels = list(runtime.labels) or [f"LABEL_{i}" for i in range(logits.shape[-1])]

        def each(row: int, part: Part) -> PartOutput:
            return {"logits": logits[row].tolist(), "labels": labels, "tokens": len(part.input_ids)}

        return rows(parts, each)

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult:
        present = usable(results)
        if not present:
            return {"label": None, "score": None, "probabilities": {}}
        labels = present[0].output["labels"]
        mean = np.mean(np.array([r.output["logits"] for r in present], dtype=np.float64), axis=0)
        probabilities = softmax(mean)
        best = int(np.argmax(probabilities))
        return {
            "label": labels[best],
            "score": float(probabilities[best]),
            "probabilities": {label: float(p) for label, p in zip(labels, probabilities, strict=True)},
        }
