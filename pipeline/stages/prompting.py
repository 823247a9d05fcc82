"""The grounded prompt of a chat reply: instructions, the retrieved entries, recent turns, the message.

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

INSTRUCTIONS = (
    "You are the customer-service assistant of an online shop. Answer the customer's message briefly and "
    "politely, in the customer's language, using only the facts below. If the facts do not answer it, say "
    "that a colleague will get back to them; never invent policies, prices or dates."
)
NO_FACTS = "(none of the shop's answers matches this message)"
PROMPT_VERSION = hashlib.sha256(f"{INSTRUCTIONS}\n{NO_FACTS}".encode()).hexdigest()[:12]


def facts(entries: Sequence[dict[str, Any]]) -> str:
    """The retrieved entries as the prompt shows them: each matched answer once, with the question it answers."""
    lines: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        if not entry.get("matched") or str(entry.get("entry")) in seen:
            continue
        seen.add(str(entry.get("entry")))
        lines.append(f"- Q: {entry.get('match')}\n  A: {entry.get('answer')}")
    return "\n".join(lines) or NO_FACTS


def chat_messages(prompt: Prompt, history: Sequence[Turn]) -> list[dict[str, str]]:
    """The conversation to render: system (instructions and facts), earlier turns, the new message."""
    messages = [{"role": "system", "content": f"{INSTRUCTIONS}\n\nFacts:\n{facts(prompt.entries)}"}]
    for turn in history:
        messages.append({"role": "user", "content": turn.user})
        messages.append({"role": "assistant", "content": turn.assistant})
    messages.append({"role": "user", "content": prompt.text})
    return messages


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The messages through the model's chat template, ending where the assistant's reply starts."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
