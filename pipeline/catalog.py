"""The task registry: every task the pipeline serves, as data, in one place.

A task is the pair (how to split, how to merge) around one model family. This
table says, for each, which request fields it reads, which setting names its
model (and what it falls back to), which export kind that model is converted
to. Everything else reads it: filter's
validation, split's tokenizers, infer's sessions, ``pipeline model export``,
``Settings.model_for``.

Adding a task is one module under ``pipeline/tasks/`` (linked by name in
:data:`pipeline.tasks.IMPLEMENTATIONS`), one line here and one model setting
in :class:`~pipeline.settings.Settings`. This module imports
nothing heavy, so settings and the command line can read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    kind: str  # the export kind of its model (pipeline.models.export.KINDS)
    fields: tuple[str, ...]  # the request fields it reads; filter checks and normalises these
    model: str  # the Settings field naming its model; empty disables the task
    fallback: str = ""  # the Settings field used when ``model`` is empty
    # Where merge sends what the task's merge returns: "answers" (the answer
    # itself), or another topic whose stage finishes the request (chat: "prompts").
    delivers: str = "answers"
    # The Settings field naming the model that generates its reply, if it has one.
    generator: str = ""


CATALOG: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("qa", "qa", ("question", "context"), "qa_model"),
        TaskSpec("classify", "classify", ("text",), "classify_model"),
        TaskSpec("embed", "embed", ("text",), "embed_model"),
        TaskSpec("faq", "embed", ("text",), "faq_model", "embed_model"),
        # Retrieval as faq, then a reply in the model's own words (the generate stage).
        TaskSpec(
            "chat",
            "embed",
            ("text",),
            "faq_model",
            "embed_model",
            delivers="prompts",
            generator="chat_model",
        ),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(CATALOG)
