"""The values of the ``chat`` task after retrieval: grounded prompts and streamed chunks.

Topic          key                         value
-------------  --------------------------  ------------------------------------------
prompts        session id (else request)   :class:`Prompt`: the message and the KB entries found for it,
                                           or an ``expire`` control record for an idle session
answer-chunks  request id                  :class:`Chunk`: one piece of the reply as it is generated
sessions       session id                  generate's changelog: the session's recent turns
answer-cache   content hash                an :class:`~pipeline.messages.Answer` to serve again

Keying prompts by session puts every message of a conversation on one
partition, so one generate member holds the conversation and its turns.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.messages.codec import Codec, Int, encode


class Prompt(msgspec.Struct, frozen=True, omit_defaults=True):
    """What merge hands generate for one chat request: the message and what retrieval found."""

    id: str
    text: str
    session: str | None = None
    max_tokens: Int | None = None
    # The best knowledge-base entry per sub-question (faq's merged answers).
    entries: list[dict[str, Any]] = msgspec.field(default_factory=list)

    @property
    def key(self) -> bytes:
        """The record key: the session keeps a conversation on one partition."""
        return (self.session or self.id).encode()

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Prompt:
        return _PROMPT.decode(data)


class Chunk(msgspec.Struct, frozen=True):
    """One piece of a reply: ``delta`` is text to append; ``seq`` counts from 0 per request.

    After a crash a chunk may come again (same ``id`` and ``seq``): readers drop
    repeats, and the final answer on ``answers`` is authoritative.
    """

    id: str
    seq: Int
    delta: str

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> Chunk:
        return _CHUNK.decode(data)


_PROMPT = Codec(Prompt, "prompt")
_CHUNK = Codec(Chunk, "chunk")


class Reassembly:
    """A reply's chunks back in order, each once: what a streaming reader keeps per request.

    Chunks of one request share a key, so they arrive in order; a crash of the
    generate member repeats some (same ``seq``), which are dropped. A chunk
    that comes early (a gap) waits for the ones before it.
    """

    def __init__(self) -> None:
        self.next_seq = 0
        self.early: dict[int, str] = {}
        self.text = ""

    def push(self, chunk: Chunk) -> list[str]:
        """The deltas that can be shown now, in order (none for a repeat)."""
        if chunk.seq < self.next_seq or chunk.seq in self.early:
            return []
        self.early[chunk.seq] = chunk.delta
        ready: list[str] = []
        while self.next_seq in self.early:
            ready.append(self.early.pop(self.next_seq))
            self.next_seq += 1
        self.text += "".join(ready)
        return ready

    def rest(self, reply: str) -> str:
        """What the final reply adds to the text shown so far ("" if the shown text is not its start)."""
        return reply[len(self.text) :] if reply.startswith(self.text) else ""
