"""A chat session as generate keeps it: the recent turns, bounded by tokens, and when it was last used.

Stored as JSON in generate's state table (the compacted ``sessions`` topic),
keyed by session id. Only what the next prompt needs is kept: the newest
turns whose tokens fit ``settings.chat.chat_history_tokens``; older ones are
dropped when a turn is added. A session idle for ``settings.chat.session_ttl_ms``
is deleted (a tombstone on the changelog).
"""

from __future__ import annotations

import threading

import msgspec

from pipeline.messages import Control, Expiry
from pipeline.messages.codec import Codec, Int, encode
from pipeline.records import Output


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


# How long before an expiry record is sent again for a session that is still there.
EXPIRE_RESEND_MS = 10_000.0
EXPIRE_PER_RECORD = 1_000  # session ids in one expiry record (about 40 kB of hex)


class IdleSessions:
    """When each session a member holds was last used, and which are due to expire.

    Fed by the handler's threads (a turn stored, a session deleted) and read by
    the loop's scan, hence the lock. A due session is swept through an expiry
    control record (:class:`~pipeline.messages.Expiry`, one per partition), so
    the deletion commits like any other step, by whichever member owns it then.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_seen: dict[tuple[int, bytes], float] = {}
        self.sent: dict[tuple[int, bytes], float] = {}

    def seen(self, partition: int, key: bytes, at: float | None) -> None:
        """Session ``key`` was used at ``at`` (None: it was deleted)."""
        with self.lock:
            if at is None:
                self.last_seen.pop((partition, key), None)
            else:
                self.last_seen[(partition, key)] = at
            self.sent.pop((partition, key), None)

    def revoked(self, partitions: list[int]) -> None:
        gone = set(partitions)
        with self.lock:
            for place in [p for p in self.last_seen if p[0] in gone]:
                self.last_seen.pop(place, None)
                self.sent.pop(place, None)

    def sweeps(self, now: float, ttl_ms: float) -> list[Output]:
        """The expiry records for the sessions idle past ``ttl_ms``: one per partition (and per 1,000 sessions)."""
        swept: dict[int, list[bytes]] = {}
        with self.lock:
            for place, last in self.last_seen.items():
                if now - last >= ttl_ms and now - self.sent.get(place, -EXPIRE_RESEND_MS) >= EXPIRE_RESEND_MS:
                    self.sent[place] = now
                    swept.setdefault(place[0], []).append(place[1])
        outputs: list[Output] = []
        for partition, keys in swept.items():
            for at in range(0, len(keys), EXPIRE_PER_RECORD):
                batch = keys[at : at + EXPIRE_PER_RECORD]
                value = Expiry.of(batch).encode()
                outputs.append(Output("prompts", batch[0], value, [Control.EXPIRE.header()], partition=partition))
        return outputs
