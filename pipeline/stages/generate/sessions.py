"""A chat session as generate keeps it: the recent turns, bounded by tokens, and when it was last used.

Stored as JSON in generate's state table (the compacted ``sessions`` topic),
keyed by session id. Only what the next prompt needs is kept: the newest
turns whose tokens fit ``settings.chat.chat_history_tokens``; older ones are
dropped when a turn is added. A session idle for ``settings.chat.session_ttl_ms``
is deleted (a tombstone on the changelog).
"""

from __future__ import annotations

import msgspec

from pipeline.messages.codec import Codec, Int, encode


class Turn(msgspec.Struct, frozen=True, array_like=True):
    """One exchange: what the user said, what was replied, and its size in tokens.

    Stored as an array ``[request, user, assistant, tokens, entries]``; turns
    stored before replies were grounded have no ``entries``.
    """

    request: str  # the request id that made it
    user: str
    assistant: str
    tokens: Int
    # (entry id, answer) the reply drew on: a follow-up that names no topic of its own draws on them again.
    entries: list[tuple[str, str]] = msgspec.field(default_factory=list)


class Session(msgspec.Struct):
    turns: list[Turn] = msgspec.field(default_factory=list)
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
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Session:
        if not data:
            return cls()
        return _SESSION.decode(data)


_SESSION = Codec(Session, "session")
