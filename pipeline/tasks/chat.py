"""Customer-service chat: retrieval as :mod:`~pipeline.tasks.faq.task`, then a reply in the model's own words.

split, infer and merge treat a chat request exactly like an faq one (one part
per sub-question, its embedding, the closest knowledge-base entry). What
differs is the end: merge does not answer, it hands a grounded
:class:`~pipeline.messages.Prompt` to the ``prompts`` topic (the catalog's
``delivers``), and the generate stage writes the reply. The request fields
generate needs (the whole message, the session, ``max_tokens``) ride along
in every part's meta, so merge can build the prompt from the results alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from pipeline.messages import Part, Prompt, Request, Result
from pipeline.models.tokenizer import Tokenizer
from pipeline.settings import Settings
from pipeline.tasks.base import AnswerResult, ModelOutputs, PartOutput, Runtime, usable
from pipeline.tasks.faq.task import FaqTask

ENTRY_FIELDS = ("question", "entry", "match", "answer", "score", "matched")


class ChatTask(FaqTask):
    name: str = "chat"

    def split(self, request: Request, tokenizer: Tokenizer, settings: Settings) -> list[Part]:
        parts = super().split(request, tokenizer, settings)
        carry = {"text": request.text, "session": request.session, "max_tokens": request.max_tokens}
        for part in parts:
            part.meta["request"] = carry
        return parts

    def postprocess(self, parts: Sequence[Part], outputs: ModelOutputs, runtime: Runtime) -> list[PartOutput]:
        found = super().postprocess(parts, outputs, runtime)
        for part, output in zip(parts, found, strict=True):
            if "error" not in output:
                output["request"] = part.meta.get("request", {})
        return found

    def merge(self, results: Sequence[Result], of: int) -> AnswerResult:
        """The prompt record's value; ``key`` (the session, else the request id) is what merge keys it by."""
        found = usable(results)
        if not found:
            raise ValueError("no sub-question of the message was retrieved")
        carry = found[0].output.get("request") or {}
        prompt = Prompt(
            id=found[0].id,
            text=str(carry.get("text") or ""),
            session=carry.get("session"),
            max_tokens=carry.get("max_tokens"),
            entries=[{key: r.output[key] for key in ENTRY_FIELDS} for r in found],
        )
        return {**orjson.loads(prompt.encode()), "key": prompt.key.decode()}
