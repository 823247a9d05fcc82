"""The fuzz corpus: bad records for every topic a stage reads, generated from a seed.

Each :class:`BadRecord` says where it goes and what the pipeline owes it:

* ``expect="error"``: exactly one error answer for ``answer_id`` and a dead
  letter holding the original value;
* ``expect="once"``: odd but valid input (right-to-left text, zero-width
  characters inside words): exactly one answer, ``ok`` or an error;
* ``expect="dead"``: no request id can be recovered (or the record sits
  behind the stage that answers): a dead letter, never an answer;
* ``expect="refused"``: over the topic's size limit, so the broker refuses it
  and the producer sees an error; nothing reaches the pipeline.

The same seed gives the same corpus, byte for byte, so a crash it finds can
be reproduced by its index.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from pipeline.messages import DEADLINE_HEADER, TRACE_HEADER, HeaderList

MB = 1_000_000
REQUEST_FIELDS = ("id", "task", "text", "question", "context", "deadline_ms")
# One of each JSON type, plus values that break naive code.
WRONG_VALUES: tuple[object, ...] = (
    None,
    True,
    0,
    -1,
    2**63,
    1.5,
    "",
    "x",
    [],
    ["a"],
    {},
    {"a": 1},
)


@dataclass(frozen=True, slots=True)
class BadRecord:
    index: int
    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: HeaderList = field(default_factory=list)
    expect: str = "error"  # error | once | dead | refused
    answer_id: str | None = None


class _Builder:
    def __init__(self, prefix: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.records: list[BadRecord] = []

    def rid(self) -> str:
        return f"{self.prefix}fz{len(self.records):05d}"

    def add(
        self,
        kind: str,
        value: bytes | None,
        *,
        topic: str = "requests",
        key: bytes | str | None = "id",
        headers: HeaderList | None = None,
        expect: str = "error",
        answer_id: str | bool | None = True,
    ) -> None:
        """``key="id"`` keys the record by its own id; ``answer_id=True`` expects it answered under that id."""
        rid = self.rid()
        key_bytes = rid.encode() if key == "id" else key if not isinstance(key, str) else key.encode()
        answer = rid if answer_id is True else (answer_id or None)
        if expect in ("dead", "refused"):
            answer = None
        self.records.append(BadRecord(len(self.records), kind, topic, key_bytes, value, headers or [], expect, answer))

    def request(self, **fields: object) -> bytes:
        body: dict[str, object] = {"id": self.rid(), "task": "faq", "text": "Where is my order?"}
        body.update(fields)
        return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()


def build_corpus(prefix: str = "", seed: int = 7, *, megabyte: bool = True) -> list[BadRecord]:
    """At least 1,000 bad records; ``megabyte=False`` leaves out the ones of a megabyte and more."""
    b = _Builder(prefix, seed)
    _requests_bytes(b)
    _requests_json(b)
    _requests_fields(b)
    _requests_text(b, megabyte)
    _requests_keys_headers(b, megabyte)
    _later_topics(b)
    while len(b.records) < 1000:  # top up with random byte strings
        b.add("random-bytes", b.rng.randbytes(b.rng.randint(1, 300)), key=None, expect="dead")
    return b.records


def _requests_bytes(b: _Builder) -> None:
    for n in range(150):
        raw = b.rng.randbytes(b.rng.randint(0, 2000))
        # With the key as id: answered; without a key: only a dead letter.
        if n % 2:
            b.add("random-bytes", raw)
        else:
            b.add("random-bytes-no-key", raw, key=None, expect="dead")
    b.add("empty-value", b"")
    b.add("null-value", None)
    b.add("invalid-utf8", b'{"id": "\xff\xfe", "task": "faq", "text": "\xc3\x28"}')
    b.add("bom", b"\xef\xbb\xbf" + b.request())


def _requests_json(b: _Builder) -> None:
    for _ in range(100):  # truncated JSON at random lengths
        full = b.request(text="How do I return a parcel? " * 4)
        b.add("truncated-json", full[: b.rng.randint(1, len(full) - 1)])
    for depth in (100, 1000, 1025, 5000, 100_000):
        b.add("nested-arrays", b"[" * depth + b"]" * depth)
        b.add("nested-objects", b'{"a":' * depth + b"1" + b"}" * depth)
        b.add(
            "nested-text",
            b'{"id":"' + b.rid().encode() + b'","task":"faq","text":' + b"[" * depth + b"]" * depth + b"}",
        )
    for literal in (b"null", b"true", b"42", b'"a string"', b"[]", b"[1,2,3]", b"1e400", b"-0", b"NaN", b"Infinity"):
        b.add("not-an-object", literal)
    for number in (b"1e400", b"-1e400", b"123456789012345678901234567890", b"18446744073709551616", b"1" * 5000):
        b.add(
            "huge-number-deadline",
            b'{"id":"' + b.rid().encode() + b'","task":"faq","text":"hi?","deadline_ms":' + number + b"}",
        )
        b.add("huge-number-text", b'{"id":"' + b.rid().encode() + b'","task":"faq","text":' + number + b"}")
    b.add("huge-deadline-u64", b.request(deadline_ms=2**64 - 1), expect="once")
    b.add("negative-deadline", b.request(deadline_ms=-(2**63)))
    b.add("duplicate-keys", b'{"id":"' + b.rid().encode() + b'","task":"faq","task":7,"text":"hi"}')
    b.add("trailing-garbage", b.request() + b"garbage")
    b.add("comments", b"/* c */" + b.request())
    b.add("single-quotes", b.request().replace(b'"', b"'"))


def _requests_fields(b: _Builder) -> None:
    # Every field of a request with every wrong type.
    for name in REQUEST_FIELDS:
        for wrong in WRONG_VALUES:
            if name == "id" and isinstance(wrong, str) and wrong:
                continue  # a string id is fine
            if name in ("text", "question", "context") and isinstance(wrong, str):
                continue  # strings are checked by _requests_text
            if name == "deadline_ms" and (wrong is None or (type(wrong) is int and wrong >= 0)):
                continue  # no deadline, a past one or a far one: valid (tested elsewhere)
            if name in ("question", "context") and wrong is None:
                continue  # faq does not read them
            value = b.request(**{name: wrong})
            answer: str | bool = True
            if name == "id":
                answer = True  # the key still carries the id
            b.add(f"wrong-type-{name}", value, answer_id=answer)
        b.add(f"missing-{name}", b.request(**{name: _DROP}), expect="once" if name in _OPTIONAL else "error")
    for task in ("", "FAQ", "translate", "x" * 10_000, "faq\u0000", "qa"):
        b.add("bad-task", b.request(task=task))
    b.add("extra-fields", b.request(extra={"nested": [1, 2, 3]}, text="Where is my order?"), expect="once")


_OPTIONAL = ("question", "context", "deadline_ms")


def _requests_text(b: _Builder, megabyte: bool) -> None:
    odd = [
        "\u200b\u200c\u200d\ufeff",  # zero-width only: empty after normalising
        "   \t\n  ",
        "\u0000\u0001\u0002",
        "\u202e?redro ym si erehW",  # right-to-left override
        "\u05d0\u05d9\u05e4\u05d4 \u05d4\u05d4\u05d6\u05de\u05e0\u05d4 \u05e9\u05dc\u05d9?",  # Hebrew
        "\u0623\u064a\u0646 \u0637\u0644\u0628\u064a\u061f",  # Arabic
        "Where\u200b is\u200d my\u2060 order?",
        "e\u0301" * 500,  # combining accents
        "\U0001f600" * 1000,  # emoji
        "\u00a0\u2000\u3000Where is my order?\u3000",
        "a\r\nb\rc\n",
        "\u0085\u2028\u2029",
        "\ud7ff\ue000\uffff",
    ]
    for text in odd:
        b.add("odd-unicode", b.request(text=text), expect="once")
    # Lone surrogates: as JSON escapes (orjson refuses them) and as raw CESU bytes.
    for escape in (b"\\ud800", b"\\udfff", b"\\ud800\\u0041", b"\\udc00\\ud800"):
        b.add("lone-surrogate", b'{"id":"' + b.rid().encode() + b'","task":"faq","text":"a' + escape + b'"}')
    b.add("lone-surrogate-raw", b'{"id":"' + b.rid().encode() + b'","task":"faq","text":"\xed\xa0\x80"}')
    b.add("lone-surrogate-id", b'{"id":"\\ud800","task":"faq","text":"hi"}')
    b.add("long-text", b.request(text="where is my order " * 6000))  # 108k chars: over max_text_chars
    b.add("long-id", b.request(id="i" * 50_000), answer_id="i" * 50_000, expect="once")
    if megabyte:
        b.add("megabyte-text", b.request(text="x" * 900_000))  # under the byte limit, over the char limit
        b.add("over-request-bytes", b.request(text="y" * 1_500_000))  # under the topic limit: too_large
        b.add("over-topic-limit", b.request(text="z" * 3_000_000), expect="refused")  # over 2 MiB: refused


def _requests_keys_headers(b: _Builder, megabyte: bool) -> None:
    b.add("null-key", b.request(), key=None, expect="once")
    b.add("huge-key", b.request(), key=b"k" * 200_000, expect="once")
    b.add("binary-key-bad-value", b"\x00garbage", key=b"\xff\xfe\x00", expect="dead")
    b.add("empty-key-bad-value", b"garbage", key=b"", expect="dead")
    garbage_deadlines = [
        b"",
        b"soon",
        b"nan",
        b"NaN",
        b"inf",
        b"-inf",
        b"1e400",
        b"1e30",
        b"-1",
        b"0x10",
        b"\xff",
        b"9" * 400,
        b" 5 ",
    ]
    for raw in garbage_deadlines:
        b.add("deadline-header", b.request(), headers=[(DEADLINE_HEADER, raw)], expect="once")
    bad_traces = [
        b"",
        b"garbage",
        b"00-xyz-abc-01",
        b"\xff\xfe",
        b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-00",
        b"t" * 10_000,
    ]
    for raw in bad_traces:
        b.add("traceparent-header", b.request(), headers=[(TRACE_HEADER, raw)], expect="once")
    for raw in (b"nan", b"inf", b"-1e400", b"x"):
        b.add("hop-header", b.request(), headers=[("pipeline-hop-requested", raw)], expect="once")
    b.add("many-headers", b.request(), headers=[(f"h{i}", b"v") for i in range(2000)], expect="once")
    b.add("huge-header", b.request(), headers=[("big", b"h" * 200_000)])
    if megabyte:
        b.add("megabyte-header", b.request(), headers=[("big", b"h" * 1_200_000)])
    b.add("dlq-header-spoof", b.request(), headers=[("pipeline-dlq-stage", b"merge")], expect="once")


def _later_topics(b: _Builder) -> None:
    """Corrupt records written straight into filtered, parts and results."""
    # filtered: split decodes a Request; an id it can recover gets an error answer.
    for _ in range(40):
        b.add("filtered-bytes", b.rng.randbytes(b.rng.randint(1, 200)), topic="filtered")
    for name in ("text", "task", "id"):
        wrongs: tuple[object, ...] = (None, 1, [], {})
        for wrong in wrongs:
            b.add(f"filtered-wrong-{name}", b.request(**{name: wrong}), topic="filtered")
    b.add("filtered-missing-text", b.request(text=_DROP), topic="filtered")
    b.add("filtered-empty-text", b.request(text=""), topic="filtered")
    b.add("filtered-qa-no-context", b.request(task="qa", question="q?", text=_DROP), topic="filtered")
    b.add("filtered-unknown-task", b.request(task="nope"), topic="filtered")
    # parts and results: infer and merge dead-letter what they cannot decode;
    # the request's answer is merge's, at its deadline, so none comes from here.
    for topic in ("parts", "results"):
        for _ in range(40):
            b.add(f"{topic}-bytes", b.rng.randbytes(b.rng.randint(1, 200)), topic=topic, expect="dead")
        for body in _bad_shapes(b, topic):
            b.add(f"{topic}-shape", body, topic=topic, key=f"{b.rid()}#0", expect="dead")
    b.add("results-no-key", b"{}", topic="results", key=None, expect="dead")
    b.add(
        "results-bad-expect",
        b"not json",
        topic="results",
        headers=[("pipeline-control", b"expect")],
        expect="dead",
    )
    b.add(
        "results-expect-wrong-types",
        orjson.dumps({"id": b.rid(), "task": 1, "of": "many"}),
        topic="results",
        headers=[("pipeline-control", b"expect")],
        expect="dead",
    )


SHAPE_WRONG: tuple[object, ...] = (None, "x", 1.5, [], {}, True)


def _bad_shapes(b: _Builder, topic: str) -> Iterator[bytes]:
    """A part (for ``parts``) or result (for ``results``) with one field of a wrong type or out of range."""
    last = "input_ids" if topic == "parts" else "output"
    base: dict[str, object] = {"id": b.rid(), "task": "faq", "part": 0, "of": 1}
    base[last] = [101, 102] if topic == "parts" else {"answer": "x"}
    for name in ("id", "task", "part", "of", last):
        for wrong in SHAPE_WRONG:
            if (name == "input_ids" and isinstance(wrong, list)) or (name == "output" and isinstance(wrong, dict)):
                continue
            if name in ("id", "task") and isinstance(wrong, str):
                continue  # any string decodes; what it names is checked later
            if name in ("part", "of") and wrong is True:
                continue  # JSON true as an index: refused too, one case is enough
            yield orjson.dumps({**base, "id": b.rid(), name: wrong})
    for part, of in ((-1, 1), (1, 1), (0, 0), (5, -2)):
        yield orjson.dumps({**base, "id": b.rid(), "part": part, "of": of})
