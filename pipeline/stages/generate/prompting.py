"""The grounded prompt of a chat reply: instructions, then recent turns, the retrieved entries and the message.

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
from pipeline.stages.generate.sessions import Turn

# Short on purpose: SmolLM2-135M answers "as a customer-service assistant, I'm
# designed to ..." instead of answering when told more about its role.
INSTRUCTIONS = "You are a helpful shop assistant. Reply in two or three sentences."
# Everything goes into one user message after the instructions: the earlier
# turns, the facts, then the message. Measured on SmolLM2-135M-Instruct: with
# the facts in the system message it ignored them ("How do I reset my
# password?"), and with earlier turns as chat turns it repeated its last reply
# instead of answering the follow-up ("And how long does the refund take?").
HISTORY = "Earlier in this conversation:\n{turns}\n\n"
ASK = (
    "{history}Facts from the shop's help pages:\n{facts}\n\n"
    "Using only these facts, answer the customer's message: {text}"
)
NO_FACTS = "(none of the help pages matches this message: say that a colleague will get back to them)"
PROMPT_VERSION = hashlib.sha256(f"{INSTRUCTIONS}\n{HISTORY}\n{ASK}\n{NO_FACTS}".encode()).hexdigest()[:12]


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
    """The conversation to render: the instructions, then one message with earlier turns, facts and the message."""
    turns = "\n".join(f"Customer: {turn.user}\nYou: {turn.assistant}" for turn in history)
    text = ASK.format(history=HISTORY.format(turns=turns) if history else "", facts=facts(prompt.entries),
                      text=prompt.text)  # fmt: skip
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": text}]


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The messages through the model's chat template, ending where the assistant's reply starts."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
