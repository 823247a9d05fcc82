"""A chat session as generate keeps it: the recent turns, bounded by tokens, and when it was last used.

Stored as JSON in generate's state table (the compacted ``sessions`` topic),
keyed by session id. Only what the next prompt needs is kept: the newest
turns whose tokens fit ``Settings.chat_history_tokens``; older ones are
dropped when a turn is added. A session idle for ``Settings.session_ttl_ms``
is deleted (a tombstone on the changelog).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from pipeline.errors import DecodeError
from pipeline.messages.codec import loads, read_field


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange: what the user said, what was replied, and its size in tokens."""

    request: str  # the request id that made it
    user: str
    assistant: str
    tokens: int
    # (entry id, answer) the reply drew on: a follow-up that names no topic of its own draws on them again.
    entries: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Session:
    turns: list[Turn] = field(default_factory=list)
    last_ms: float = 0.0

    def add(self, turn: Turn, budget_tokens: int, now: float) -> None:
        """Append ``turn``, then drop the oldest turns until the rest fit ``budget_tokens``."""
        self.turns.append(turn)
        self.last_ms = now
        while self.turns and sum(t.tokens for t in self.turns) > budget_tokens:
            self.turns.pop(0)

    def recent(self, budget_tokens: int) -> list[Turn]:
        """The newest turns that fit ``budget_tokens``, oldest first (the order a prompt wants)."""
        kept: list[Turn] = []
        used = 0
        for turn in reversed(self.turns):
            if used + turn.tokens > budget_tokens:
                break
            kept.append(turn)
            used += turn.tokens
        return kept[::-1]

    def answered(self, request_id: str) -> bool:
        return any(t.request == request_id for t in self.turns)

    def expired(self, now: float, ttl_ms: float) -> bool:
        return now - self.last_ms >= ttl_ms

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "turns": [[t.request, t.user, t.assistant, t.tokens, [list(e) for e in t.entries]] for t in self.turns],
                "last_ms": self.last_ms,
            }
        )

    @classmethod
    def decode(cls, data: bytes | None) -> Session:
        if not data:
            return cls()
        obj = loads(data, "session")
        try:
            turns = [_turn(t) for t in read_field(obj, "turns", list, "session")]
        except (TypeError, ValueError, IndexError) as exc:
            raise DecodeError(f"session: malformed turns: {exc}") from exc
        return cls(turns, float(read_field(obj, "last_ms", (int, float), "session")))


def _turn(fields: list[object]) -> Turn:
    """A stored turn: [request, user, assistant, tokens] and, since replies are grounded, its entries."""
    request, user, assistant, tokens, *rest = fields
    entries = [(str(e), str(a)) for e, a in rest[0]] if rest else []  # type: ignore[attr-defined]
    return Turn(str(request), str(user), str(assistant), int(tokens), entries)  # type: ignore[call-overload]
