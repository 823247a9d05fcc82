"""The grounded prompt of a chat reply: instructions, recent turns, the retrieved entries with the message.

:func:`chat_messages` is pure (testable without a model); :func:`prompt_ids`
renders the messages with the model's own chat template into token ids.
Changing :data:`INSTRUCTIONS` changes :data:`PROMPT_VERSION`, which is part of
the answer cache's key, so a new prompt never serves an old reply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pipeline.messages import Prompt
from pipeline.stages.sessions import Turn

# Short on purpose: SmolLM2-135M answers "as a customer-service assistant, I'm
# designed to ..." instead of answering when told more about its role.
INSTRUCTIONS = "You are a helpful shop assistant. Reply in two or three sentences."
# The facts go into the last user message, next to the question: a small model
# follows them there far better than in the system message (SmolLM2-135M: the
# reply to "How do I reset my password?" used the shop's steps only this way).
ASK = "Facts from the shop's help pages:\n{facts}\n\nUsing only these facts, answer the customer's message: {text}"
NO_FACTS = "(none of the help pages matches this message: say that a colleague will get back to them)"
PROMPT_VERSION = hashlib.sha256(f"{INSTRUCTIONS}\n{ASK}\n{NO_FACTS}".encode()).hexdigest()[:12]


def facts(entries: Sequence[dict[str, Any]]) -> str:
    """The retrieved entries as the prompt shows them: each matched answer once, as a bullet."""
    lines: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        if not entry.get("matched") or str(entry.get("entry")) in seen:
            continue
        seen.add(str(entry.get("entry")))
        lines.append(f"- {entry.get('answer')}")
    return "\n".join(lines) or NO_FACTS


def chat_messages(prompt: Prompt, history: Sequence[Turn]) -> list[dict[str, str]]:
    """The conversation to render: instructions, earlier turns, then the facts with the new message."""
    messages = [{"role": "system", "content": INSTRUCTIONS}]
    for turn in history:
        messages.append({"role": "user", "content": turn.user})
        messages.append({"role": "assistant", "content": turn.assistant})
    messages.append({"role": "user", "content": ASK.format(facts=facts(prompt.entries), text=prompt.text)})
    return messages


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The messages through the model's chat template, ending where the assistant's reply starts."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
