"""Grounded decoding: logits processors that keep a small model's reply to what the facts say.

One :class:`GroundedDecoding` per sequence, called by the engine on that
sequence's row of logits before the greedy pick, at prefill and at every
step, so it works inside continuous batching (a row's processor sees only its
own tokens). It does three things, in this order:

1. **no repeats**: a token that would complete an n-gram (``no_repeat``
   tokens) already in the reply is forbidden, so the model cannot loop
   ("I'm sorry for the confusion, but I'm sorry for any confusion"); digits
   and number separators are left to rule 2, since a fact's number may be
   said twice; special tokens other than the end of the reply, and line
   breaks, never appear (a reply is one paragraph);
2. **only grounded numbers**: a digit may only extend the number being
   written towards one that the facts or the message contain, and a number
   not yet complete cannot be left (every other token is forbidden until it
   is); digits without a grounded continuation are forbidden outright. Prices,
   times, phone numbers and counts are all digits in the model's vocabulary
   (SmolLM2 writes one digit per token), so this covers them;
3. **a sentence of its own**: the end-of-reply token is forbidden until the
   model has ended a sentence after the prefix, so a reply is never only the
   fact sentence it was given to open with;
4. **copying**: a token that continues the facts where the reply's last
   ``n`` tokens match them (n = 1, 2, 3) gets ``copy_bonus[n-1]`` added, and
   the end of a fact's entry continues to the end-of-reply token, so the
   model prefers to say what the facts say in their words, and to stop.

The reply the processor sees is the forced ``prefix`` (the fact sentence the
reply opens with, already part of the prompt) followed by the generated
tokens. :class:`GroundedDecoding` is a plain function of (tokens, scores);
``tests/unit/test_constraints.py`` runs the same object as a transformers
``LogitsProcessor`` and checks that the engine's greedy tokens equal
``generate``'s, alone and in a running batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_RUN = re.compile(r"\d+(?:[.,:/\-]\d+)*[.,:/\-]?$")
_SEPARATORS = ".,:/-"
# How many trailing tokens are decoded to find the number being written.
_TAIL = 24


class Vocabulary:
    """Each token's text alone, and which tokens are digits or number separators (built once per tokenizer)."""

    def __init__(self, tokenizer: Any) -> None:
        size = len(tokenizer)
        self.text = [tokenizer.decode([i]) for i in range(size)]
        self.size = size
        self.digits = {i: t for i, t in enumerate(self.text) if t and t.isdigit() and t.isascii()}
        # Digits the model must never write on its own: superscripts, subscripts, other scripts' digits.
        self.odd_digits = np.array([i for i, t in enumerate(self.text) if any(c.isdigit() for c in t)
                                    and i not in self.digits], np.int64)  # fmt: skip
        self.separators = {i: t for i, t in enumerate(self.text) if t in _SEPARATORS}
        self.end_ids = tuple(int(i) for i in _end_ids(tokenizer))
        # Special tokens other than the end of the reply (<|endoftext|>, <|im_start|>, ...) have no place in one.
        # Nor does a line break: a reply is one paragraph, and after a blank line SmolLM2 writes about the
        # conversation ("The answer is yes.") instead of continuing it.
        specials = {int(i) for i in getattr(tokenizer, "all_special_ids", None) or []}
        breaks = {i for i, t in enumerate(self.text) if "\n" in t}
        self.specials = np.array(sorted((specials | breaks) - set(self.end_ids)), np.int64)
        # Digits and separators are the number rule's: a fact's number may be written twice.
        self.numeric = frozenset(self.digits) | frozenset(self.separators)
        self.ends_sentence = [any(c in ".!?" for c in t) for t in self.text]


def _end_ids(tokenizer: Any) -> Iterable[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if end is not None:
        ids.add(end)
    return sorted(i for i in ids if i is not None)


@dataclass(frozen=True)
class DecodingRules:
    """The knobs of grounded decoding (Settings: chat_copy_bonus, chat_no_repeat)."""

    copy_bonus: tuple[float, float, float] = (1.0, 2.0, 3.0)
    no_repeat: int = 4
    own_sentence: bool = True


class GroundedDecoding:
    """The per-sequence processor (see the module docstring). Call it as ``process(tokens, scores)``."""

    def __init__(
        self,
        vocab: Vocabulary,
        fact_token_runs: Sequence[Sequence[int]],
        numbers: Iterable[str],
        prefix: Sequence[int] = (),
        rules: DecodingRules = DecodingRules(),
    ) -> None:
        self.vocab = vocab
        self.rules = rules
        self.prefix = [int(t) for t in prefix]
        self.prefixes = _prefixes(numbers)
        self.complete = {n for n in numbers}
        # (n-gram) -> tokens that follow it somewhere in the facts; each run ends in the end-of-reply token.
        self.follows: list[dict[tuple[int, ...], set[int]]] = [{}, {}, {}]
        end = vocab.end_ids[:1]
        for run in fact_token_runs:
            seq = [int(t) for t in run] + list(end)
            for n in (1, 2, 3):
                table = self.follows[n - 1]
                for i in range(n, len(seq)):
                    table.setdefault(tuple(seq[i - n : i]), set()).add(seq[i])

    def __call__(self, tokens: Sequence[int], scores: np.ndarray) -> np.ndarray:
        """``scores`` (one row of logits) changed in place for the reply ``prefix + tokens``; returned."""
        reply = self.prefix + [int(t) for t in tokens]
        if len(self.vocab.specials):
            scores[self.vocab.specials] = -np.inf
        self._no_repeat(reply, scores)
        self._numbers(reply, scores)
        self._copy(reply, scores)
        if self.rules.own_sentence and not any(self.vocab.ends_sentence[t] for t in tokens):
            scores[list(self.vocab.end_ids)] = -np.inf
        if not np.isfinite(scores).any():  # every rule said no: end the reply rather than pick token 0
            scores[list(self.vocab.end_ids)] = 0.0
        return scores

    def _no_repeat(self, reply: list[int], scores: np.ndarray) -> None:
        n = self.rules.no_repeat
        if n <= 0 or len(reply) < n:
            return
        last = tuple(reply[len(reply) - n + 1 :])
        banned = [reply[i + n - 1] for i in range(len(reply) - n + 1) if tuple(reply[i : i + n - 1]) == last]
        banned = [t for t in banned if t not in self.vocab.numeric]
        if banned:
            scores[np.array(banned, np.int64)] = -np.inf

    def _numbers(self, reply: list[int], scores: np.ndarray) -> None:
        vocab = self.vocab
        if len(vocab.odd_digits):
            scores[vocab.odd_digits] = -np.inf
        tail = "".join(vocab.text[t] for t in reply[-_TAIL:])
        match = _RUN.search(tail)
        run = match.group(0) if match else ""
        allowed = [i for i, d in vocab.digits.items() if run + d in self.prefixes]
        # Half a number (digits not yet one of the facts', or "3-" of "3-5"): only what completes it may follow.
        half = bool(run) and (
            run not in self.complete if run[-1].isdigit() else run[-1] in "-/:" and run in self.prefixes
        )
        if half:
            keep = allowed + [i for i, sep in vocab.separators.items() if run + sep in self.prefixes]
            kept = scores[keep].copy()
            scores[:] = -np.inf
            scores[keep] = kept
            return
        banned = [i for i in vocab.digits if i not in allowed]
        if banned:
            scores[np.array(banned, np.int64)] = -np.inf

    def _copy(self, reply: list[int], scores: np.ndarray) -> None:
        bonus: dict[int, float] = {}
        for n in (1, 2, 3):
            if len(reply) < n:
                break
            for token in self.follows[n - 1].get(tuple(reply[-n:]), ()):
                bonus[token] = max(bonus.get(token, 0.0), self.rules.copy_bonus[n - 1])
        if bonus:
            ids = np.fromiter(bonus, np.int64, len(bonus))
            scores[ids] += np.fromiter(bonus.values(), np.float32, len(bonus))


def _prefixes(numbers: Iterable[str]) -> set[str]:
    """Every prefix of every allowed number ("3-5" gives "3", "3-", "3-5")."""
    out: set[str] = set()
    for number in numbers:
        out.update(number[:i] for i in range(1, len(number) + 1))
    return out
