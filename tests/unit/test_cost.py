"""What an answer cost: a batch's CPU shared among its outputs, carried in headers, summed by merge and telemetry."""

from __future__ import annotations

import orjson

from pipeline.messages import COST_PREFIX, Answer, Headers
from pipeline.monitor.state import MonitorState, Window, counter_keys, prometheus_text
from pipeline.records import Output, Record
from pipeline.settings import Settings
from pipeline.stages.merge import Gather, step
from pipeline.telemetry import Aggregator, charge


def test_a_batch_cost_is_shared_among_the_outputs_that_carry_a_request_on() -> None:
    outputs = [Output("parts", b"r1", b"p0", [("x", b"1")]), Output("parts", b"r1", b"p1"),
               Output("dead-letters", b"r2", b"bad"), Output("results", b"r3", b"e")]  # fmt: skip
    charged = charge(outputs, "split", cpu_ms=6.0, handler_ms=9.0)
    assert charged[0].headers == [("x", b"1"), (COST_PREFIX + "split", b"2.000")]
    assert charged[2] is outputs[2], "a dead letter carries no request on"
    infer = charge([Output("results", b"r1", b"o"), Output("results", b"r2", b"o")], "infer", 4.0, 10.0)
    assert Headers.parse(infer[1].headers).costs == {"infer": 2.0, "model": 5.0}, "infer's run is model time"
    assert charge([], "merge", 1.0, 1.0) == []


def test_costs_travel_in_headers_and_merge_adds_per_part_costs_once_per_part() -> None:
    headers = Headers.parse([(COST_PREFIX + "filter", b"0.5"), (COST_PREFIX + "split", b"0.25"),
                             (COST_PREFIX + "split", b"0.25"), (COST_PREFIX + "bad", b"nan")])  # fmt: skip
    assert headers.costs == {"filter": 0.5, "split": 0.5} and headers.stamped("x").costs == headers.costs
    assert Headers.parse(headers.to_list()).costs == headers.costs
    settings = Settings()
    state = None
    for part in (0, 1, 1):  # part 1 twice: a duplicate costs nothing more
        result = orjson.dumps({"id": "r", "task": "embed", "part": part, "of": 3, "output": {"embedding": [1.0],
                               "tokens": 2}})  # fmt: skip
        part_headers = [(COST_PREFIX + "filter", b"0.5"), (COST_PREFIX + "split", b"0.1"),
                        (COST_PREFIX + "infer", b"1.0"), (COST_PREFIX + "model", b"3.0")]  # fmt: skip
        state = step(state, Record("results", 0, part, b"r", result, part_headers, 1.0), settings, 2.0).state
    assert state is not None
    assert state.costs == {"filter": 0.5, "split": 0.2, "infer": 2.0, "model": 6.0}
    assert Gather.decode(state.encode()).costs == state.costs, "kept in merge's changelog with the parts"


def test_the_answering_stage_sums_costs_by_task_and_the_monitor_shows_them_per_thousand_answers() -> None:
    aggregator = Aggregator("merge", "merge-0", 1.0, 0.0)
    cost = [(COST_PREFIX + "filter", b"0.4"), (COST_PREFIX + "infer", b"1.6"), (COST_PREFIX + "model", b"3.0")]
    faq = Answer(id="a", status="ok", task="faq", result={"reply": "x"})
    chat = Answer(id="c", status="ok", task="chat", result={"reply": "y", "tokens": {"prompt": 300, "completion": 40}})
    cached = Answer(id="b", status="ok", task="faq", result={"reply": "x"}, cached=True)
    aggregator.batch(3, 0.01, [])
    cheap = [(COST_PREFIX + "filter", b"0.2")]
    aggregator.delivered([Output("answers", b"a", faq.encode(), cost), Output("answers", b"c", chat.encode(), cost),
                          Output("answers", b"b", cached.encode(), cheap)], 0.01)  # fmt: skip
    report = aggregator.take(2.0)
    assert report is not None
    assert report.costs["faq"] == {"answers": 2, "cpu_ms": 2.2, "model_ms": 3.0, "tokens_in": 0, "tokens_out": 0,
                                   "cached": 1}  # fmt: skip
    assert report.costs["chat"]["tokens_in"] == 300 and report.costs["chat"]["tokens_out"] == 40
    keys = counter_keys(report)
    assert keys["cost|faq|cpu_ms"] == 2200 and keys["cost|faq|answers"] == 2, "ms kept as integer µs"
    minute = Window.of(keys.items())
    page = MonitorState([]).to_json(Window.of([]), minute)
    assert page["cost_per_1k"]["faq"] == {"answers": 2, "cpu_s": 1.1, "model_s": 1.5, "tokens_in": 0.0,
                                          "tokens_out": 0.0, "cache_hits": 500.0}  # fmt: skip
    assert page["cost_per_1k"]["chat"]["tokens_out"] == 40000.0
    text = prometheus_text(MonitorState([]), page["windows"]["1m"]).decode()
    assert 'pipeline_monitor_cost_per_1k_answers{kind="cpu_s",task="faq"} 1.1' in text
