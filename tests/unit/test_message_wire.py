"""The wire format did not change with the msgspec codec: what the hand-written codec wrote still decodes.

Each ``old`` is the bytes the hand-written orjson codec wrote for a value (taken
from it before the change). ``new`` is what the msgspec codec writes for the
decoded value: the same bytes, except that a field left at an empty default
(``latency_ms`` {}, ``entries`` []) is now omitted like the ``None`` ones, and
a prompt's ``entries`` come in declaration order. The old decoder read a
missing field as its default, so it reads every ``new`` as the same value.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.messages import Answer, Chunk, ErrorInfo, Expect, Part, Prompt, Request, Result
from pipeline.stages.generate.sessions import Session, Turn
from pipeline.telemetry import StageReport

SAME: list[tuple[Any, bytes, Any]] = [
    (Request, b'{"id":"r1","task":"qa","question":"Who?","context":"Ada wrote it.","deadline_ms":1700000000000}',
     Request(id="r1", task="qa", question="Who?", context="Ada wrote it.", deadline_ms=1700000000000)),
    (Request, b'{"id":"r2","task":"chat","text":"hi","session":"s1","max_tokens":64,"lang":"en"}',
     Request(id="r2", task="chat", text="hi", session="s1", max_tokens=64, lang="en")),
    (Part, b'{"id":"r1","task":"qa","part":0,"of":2,"input_ids":[101,7,102],"token_type_ids":[0,0,1],'
           b'"meta":{"offsets":[[0,3]]}}',
     Part(id="r1", task="qa", part=0, of=2, input_ids=[101, 7, 102], token_type_ids=[0, 0, 1],
          meta={"offsets": [[0, 3]]})),
    (Part, b'{"id":"r3","task":"embed","part":1,"of":2,"input_ids":[101,102],"token_type_ids":null,"meta":{}}',
     Part(id="r3", task="embed", part=1, of=2, input_ids=[101, 102])),
    (Result, b'{"id":"r1","task":"embed","part":1,"of":2,"output":{"vector":[0.5,-1.25],"tokens":3}}',
     Result(id="r1", task="embed", part=1, of=2, output={"vector": [0.5, -1.25], "tokens": 3})),
    (Answer, b'{"id":"r1","status":"ok","task":"faq","result":{"reply":"hi","score":0.75},'
             b'"latency_ms":{"filter":1.5,"merge":2.0}}',
     Answer("r1", "ok", "faq", {"reply": "hi", "score": 0.75}, None, {"filter": 1.5, "merge": 2.0})),
    (Answer, b'{"id":"r4","status":"error","error":{"code":"invalid_request","message":"bad"},'
             b'"latency_ms":{"filter":0.25},"cached":true}',
     Answer("r4", "error", None, None, ErrorInfo("invalid_request", "bad"), {"filter": 0.25}, True)),
    (Chunk, b'{"id":"r5","seq":3,"delta":" world"}', Chunk(id="r5", seq=3, delta=" world")),
    (Expect, b'{"id":"r1","task":"qa","of":3}', Expect(id="r1", task="qa", of=3)),
    (Session, b'{"turns":[["r1","hi","hello",5,[["e1","a1"]]]],"last_ms":1000.0}',
     Session([Turn("r1", "hi", "hello", 5, [("e1", "a1")])], 1000.0)),
    (StageReport, b'{"stage":"merge","member":"merge-0","at_ms":1000.0,"span_s":1.0,"records":3,"batches":1,'
                  b'"handler_s":0.5,"answers":{"ok":2},"dead_letters":{"invalid_request":1},"latest_dead":'
                  b'[{"code":"invalid_request","reason":"bad","source":"requests[0]@1","key":"r9"}],'
                  b'"hops_ms":{"merge":[1.5]}}',
     StageReport("merge", "merge-0", 1000.0, 1.0, records=3, batches=1, handler_s=0.5, answers={"ok": 2},
                 dead_letters={"invalid_request": 1},
                 latest_dead=[{"code": "invalid_request", "reason": "bad", "source": "requests[0]@1", "key": "r9"}],
                 hops_ms={"merge": [1.5]})),
]  # fmt: skip

CHANGED: list[tuple[Any, bytes, bytes]] = [
    (Answer, b'{"id":"r2","status":"error","task":"qa","result":{"a":1},"error":{"code":"partial",'
             b'"message":"1 of 3 parts missed the deadline","missing":[2]},"latency_ms":{}}',
     b'{"id":"r2","status":"error","task":"qa","result":{"a":1},"error":{"code":"partial",'
     b'"message":"1 of 3 parts missed the deadline","missing":[2]}}'),
    (Prompt, b'{"id":"r5","text":"and the price?","entries":[{"entry":"e1","answer":"a1","score":0.9}],'
             b'"session":"s1","max_tokens":32}',
     b'{"id":"r5","text":"and the price?","session":"s1","max_tokens":32,'
     b'"entries":[{"entry":"e1","answer":"a1","score":0.9}]}'),
    (Prompt, b'{"id":"r6","text":"hi","entries":[]}', b'{"id":"r6","text":"hi"}'),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "old", "value"), SAME)
def test_old_bytes_decode_and_are_written_back_unchanged(kind: Any, old: bytes, value: Any) -> None:
    assert kind.decode(old) == value
    assert value.encode() == old


@pytest.mark.parametrize(("kind", "old", "new"), CHANGED)
def test_old_bytes_decode_and_new_bytes_say_the_same(kind: Any, old: bytes, new: bytes) -> None:
    value = kind.decode(old)
    assert value.encode() == new
    assert kind.decode(new) == value
    # What the old decoder read from ``new``: the omitted fields at their defaults, the rest the same.
    assert {k: v for k, v in orjson.loads(old).items() if v not in ({}, [])} == orjson.loads(new)


def test_numpy_outputs_are_written_as_plain_numbers() -> None:
    np = pytest.importorskip("numpy")
    result = Result(id="r1", task="embed", part=0, of=1,
                    output={"vector": np.array([0.5, -1.25], dtype=np.float32), "tokens": np.int64(3)})  # fmt: skip
    assert result.encode() == b'{"id":"r1","task":"embed","part":0,"of":1,"output":{"vector":[0.5,-1.25],"tokens":3}}'
