"""The grounded prompt of a chat reply: instructions, then recent turns, the retrieved entries and the message.

:func:`chat_messages` is pure (testable without a model); :func:`prompt_ids`
renders the messages with the model's own chat template into token ids.
Changing :data:`INSTRUCTIONS` changes :data:`PROMPT_VERSION`, which is part of
the answer cache's key, so a new prompt never serves an old reply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from pipeline.messages import Prompt
from pipeline.models.constraints import DecodingRules, GroundedDecoding, Vocabulary
from pipeline.settings import ChatSettings, Settings
from pipeline.stages.generate.grounding import Grounds
from pipeline.stages.generate.sessions import Turn
from pipeline.tasks.faq.followup import leans_on_previous

# Short on purpose: SmolLM2-135M answers "as a customer-service assistant, I'm
# designed to ..." instead of answering when told more about its role.
INSTRUCTIONS = "You are a helpful shop assistant. Answer the question with the facts, in one or two short sentences."
# Everything goes into one user message after the instructions: the earlier
# turns, the facts, then the message. Measured on SmolLM2-135M-Instruct: with
# the facts in the system message it ignored them ("How do I reset my
# password?"), and with earlier turns as chat turns it repeated its last reply
# instead of answering the follow-up ("And how long does the refund take?").
HISTORY = "Earlier in this conversation:\n{turns}\n\n"
ASK = "{history}Facts from the shop's help pages:\n{facts}\n\nQuestion: {text}"
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


# A follow-up's own retrieval at or above this score is trusted before the earlier turn's entries.
FOLLOW_UP_TRUST = 0.6
FOLLOW_UP_OPENERS = ("and ", "and,", "what about", "how about", "also", "plus ", "but ", "so ")


@dataclass(frozen=True)
class Plan:
    """How a grounded reply starts: the facts it may state, and the sentences it opens with."""

    prompt: Prompt  # with the entries the reply draws on
    grounds: Grounds
    lead: str  # the best fact sentence per sub-question, streamed before the model runs ("" if none matched)
    runs: list[str]  # the fact texts the decoder copies from, one per entry


def grounded_plan(prompt: Prompt, history: Sequence[Turn]) -> Plan:
    """The facts of ``prompt`` and the sentence the reply opens with.

    A follow-up (:func:`follows_up`: "How long does it take to get there?",
    "And express?") is retrieved on its own words, which may point at a
    neighbour entry, so the entries the previous turn drew on are candidates
    too: before the retrieved ones unless retrieval was sure
    (``FOLLOW_UP_TRUST``). The lead is the candidate sentence sharing most with
    the message, and the reply keeps to that sentence's entry alone, so the
    model does not drift into the other candidate's facts.
    """
    entries = [e for e in prompt.entries if e.get("matched")]
    if history and history[-1].entries and follows_up(prompt.text):
        known = {str(e.get("entry")) for e in entries}
        earlier = [{"question": prompt.text, "entry": entry, "answer": answer, "matched": True, "carried": True}
                   for entry, answer in history[-1].entries if entry not in known]  # fmt: skip
        sure = max((float(e.get("score") or 0.0) for e in entries), default=0.0) >= FOLLOW_UP_TRUST
        candidates = entries + earlier if sure else earlier + entries
        pairs = [(str(e.get("entry")), str(e.get("answer") or "")) for e in candidates]
        fact = Grounds.of(pairs, prompt.text).lead(prompt.text, [entry for entry, _ in pairs])
        if fact is not None:
            entries = [e for e in candidates if str(e.get("entry")) == fact.entry]
            prompt = msgspec.structs.replace(prompt, entries=entries)
    pairs = [(str(e.get("entry")), str(e.get("answer") or "")) for e in entries]
    grounds = Grounds.of(pairs, prompt.text)
    leads: list[str] = []
    for entry in entries:  # one lead per sub-question, in the order asked
        fact = grounds.lead(str(entry.get("question") or prompt.text), [str(entry.get("entry"))])
        if fact is not None and fact.text not in leads:
            leads.append(fact.text)
    runs = list(dict.fromkeys(answer for _, answer in pairs if answer))
    return Plan(prompt, grounds, " ".join(leads), runs)


def follows_up(text: str) -> bool:
    """Whether a chat message may lean on the turn before: it names too little of its own topic
    (:func:`~pipeline.tasks.faq.followup.leans_on_previous`), opens with a joining word ("And express?",
    "What about Canada?") or is a few words at most."""
    plain = text.strip().lower()
    return leans_on_previous(text) or plain.startswith(FOLLOW_UP_OPENERS) or len(plain.split()) <= 3


def grounded_sequence(
    plan: Plan, tokenizer: Any, vocab: Vocabulary, settings: Settings, history: Sequence[Turn] = ()
) -> tuple[list[int], GroundedDecoding]:
    """What the engine runs for a grounded reply: the prompt with the lead as the reply's start, and its logits
    processor (the text then goes through ``CheckedStream(plan.grounds, plan.lead, ...)``)."""
    lead_ids = [int(t) for t in tokenizer(plan.lead, add_special_tokens=False)["input_ids"]]
    ids = prompt_ids(tokenizer, chat_messages(plan.prompt, history)) + lead_ids
    runs = [tokenizer(" " + text, add_special_tokens=False)["input_ids"] for text in plan.runs]
    process = GroundedDecoding(vocab, runs, plan.grounds.numbers, lead_ids, rules(settings.chat))
    return ids, process


def rules(chat: ChatSettings) -> DecodingRules:
    bonus = tuple(float(x) for x in chat.chat_copy_bonus.split(","))
    if len(bonus) != 3:
        raise ValueError(f"PIPELINE_CHAT_COPY_BONUS={chat.chat_copy_bonus!r}: three numbers, for 1-, 2- and 3-grams")
    return DecodingRules(copy_bonus=(bonus[0], bonus[1], bonus[2]), no_repeat=chat.chat_no_repeat)
