"""pipeline monitor against the real broker: telemetry in, windowed numbers and lag out, the live page in Chromium.

The page is opened in headless Chromium (`make test` installs it: apt's
``chromium``); its screenshot is kept in .cache/test-artifacts/monitor.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from pipeline.runtime.config import producer_config
from pipeline.runtime.telemetry import TelemetryEmitter
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.telemetry import StageReport
from pipeline.topics import TopicSpec
from tests.net import free_port

ARTIFACTS = PROJECT_ROOT / ".cache" / "test-artifacts"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium is needed for the monitor's page test: apt-get install -y chromium (make test does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def monitor(settings: Settings, topics: dict[str, TopicSpec]) -> Iterator[str]:
    """``pipeline monitor`` as a process on a free port; its base URL."""
    port = free_port()
    log = (PROJECT_ROOT / ".cache" / "test-logs").joinpath(f"monitor-{settings.kafka.prefix.rstrip('-')}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "monitor", "--port", str(port)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_state(url: str, ready: Any, timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = get_json(f"{url}/api/state")
            if ready(last):
                return dict(last)
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"the monitor did not show it within {timeout_s:.0f} s; last state: {last}")


def test_the_monitor_counts_telemetry_reads_lag_and_shows_it_on_its_live_page(
    settings: Settings, topics: dict[str, TopicSpec], monitor: str
) -> None:
    browser = chromium()
    # Requests no filter member takes: filter's group builds lag and is stalled.
    producer = Producer(producer_config(settings, "monitor-test"))
    for i in range(5):
        producer.produce(topics["requests"].topic, key=f"m{i}", value=b"{}")
    producer.flush(10)
    # What merge and filter members would report (the emitter the runner uses).
    now = time.time() * 1000
    merge = StageReport("merge", "merge-0", now, 1.0, records=40, batches=4, answers={"ok": 38, "partial": 2},
                        hops_ms={"infer": [12.0] * 98 + [180.0, 420.0], "merge": [3.0] * 100,
                                 "total": [40.0] * 99 + [900.0]})  # fmt: skip
    dead = {"code": "invalid_request", "reason": "request: not valid UTF-8 JSON", "source": "requests[3]@17",
            "key": "bad-1"}  # fmt: skip
    filter_report = StageReport("filter", "filter-0", now, 1.0, records=6, batches=1, answers={"invalid_request": 1},
                                dead_letters={"invalid_request": 1}, latest_dead=[dead])  # fmt: skip
    emitter = TelemetryEmitter(settings, "merge", "test-member")
    for report in (merge, filter_report):
        emitter.send(report)
    emitter.producer.produce(settings.topic("telemetry"), key=b"x", value=b"not a report")  # must not stop it
    emitter.producer.flush(10)

    state = wait_for_state(monitor, lambda s: s["reports"] >= 2 and s["lag_read_at"] is not None
                           and next(x for x in s["stages"] if x["name"] == "filter")["lag"] == 5
                           and s["windows"]["1m"]["answers"].get("merge"))  # fmt: skip
    stages = {s["name"]: s for s in state["stages"]}
    assert [s["name"] for s in state["stages"]] == ["filter", "split", "infer", "merge", "generate"]
    assert stages["filter"]["state"] == "stalled" and stages["filter"]["members"] == []
    assert (stages["infer"]["p50_ms"], stages["infer"]["p99_ms"]) == (15, 200), state["windows"]  # bucket bounds
    assert stages["merge"]["error_rate"] == 0.05 and stages["filter"]["dead_letters_1m"] == 1
    assert state["end_to_end"] == {"p50_ms": 50, "p99_ms": 50}
    assert state["latest_dead"][0]["key"] == "bad-1"
    assert state["windows"]["1m"]["answers"]["merge"] == {"ok": 38, "partial": 2}
    advice = get_json(f"{monitor}/api/advice")
    assert advice["filter"]["members"] >= 1 and "inputs" in advice["filter"]
    with urllib.request.urlopen(f"{monitor}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'pipeline_monitor_lag_records{stage="filter"} 5.0' in metrics
    assert 'pipeline_monitor_latency_p99_seconds{hop="infer"} 0.2' in metrics

    # The page, as a browser renders it after its scripts ran.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "monitor.png"
    screenshot.unlink(missing_ok=True)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=6000", "--window-size=1500,900"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", monitor + "/"], capture_output=True, text=True, timeout=120).stdout
    subprocess.run([*flags, f"--screenshot={screenshot}", monitor + "/"], capture_output=True, timeout=120)
    assert 'data-stage="filter"' in dom and 'data-stage="generate"' in dom, dom[-2000:]
    filter_box = dom[dom.index('data-stage="filter"') : dom.index('data-stage="split"')]
    assert ">stalled<" in filter_box and 'class="n-lag">5<' in filter_box and "no members" in filter_box
    infer_box = dom[dom.index('data-stage="infer"') : dom.index('data-stage="merge"')]
    assert 'class="n-latency">15 ms / 200 ms<' in infer_box
    merge_box = dom[dom.index('data-stage="merge"') : dom.index('data-stage="generate"')]
    assert 'class="n-errors">5.0 %<' in merge_box
    assert "bad-1" in dom and "requests[3]@17" in dom and "p50 50 ms, p99 50 ms" in dom
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, "the screenshot is kept for people to look at"
    Path(ARTIFACTS / "monitor.html").write_text(dom)


def render(browser: str, url: str, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (and a screenshot, when asked)."""
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=4000", "--window-size=1500,1100"]  # fmt: skip
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
    return subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


def spark(dom: str, stage: str, series: str) -> tuple[float, dict[str, str]]:
    """A chart's largest value and each of its lines' points, read from the rendered SVG."""
    match = re.search(rf'<svg class="spark" data-stage="{stage}" data-series="{series}" data-max="([^"]*)"(.*?)</svg>',
                      dom, re.S)  # fmt: skip
    assert match, f"no {series} chart for {stage} on the page: {dom[-3000:]}"
    return float(match[1]), dict(re.findall(r'data-line="([^"]+)"[^>]*points="([^"]*)"', match[2]))


COST = {"answers": 10, "cpu_ms": 20.0, "model_ms": 35.0, "cached": 1}  # what merge says its 10 answers cost


def loaded(state: dict[str, Any]) -> bool:
    """The last sample of the history saw the load: records arriving at filter, latencies at merge and end to end."""
    h = state["history"]
    filter_rate = h["stages"]["filter"]["arrival"][-1] if h["at"] else None
    merge_p99 = h["stages"]["merge"]["p99_ms"][-1] if h["at"] else None
    e2e_p99 = h["end_to_end"]["p99_ms"][-1] if h["at"] else None
    return (filter_rate or 0) > 5 and merge_p99 is not None and e2e_p99 is not None


def heights(points: str) -> set[float]:
    """The distinct heights a chart's line takes (one: it is flat)."""
    return {float(point.split(",")[1]) for point in points.split()}


def test_the_page_charts_the_last_minutes_and_the_charts_move_when_load_starts(
    settings: Settings, topics: dict[str, TopicSpec], monitor: str
) -> None:
    browser = chromium()
    # Idle first: two group readings (10 s apart) with nothing arriving.
    wait_for_state(monitor, lambda s: len(s["history"]["at"]) >= 2)
    before = render(browser, monitor + "/")
    for stage in ("filter", "split", "infer", "merge", "generate"):
        for series in ("rate", "lag_s", "p99_ms", "errors", "members"):
            spark(before, stage, series)
    idle_max, idle_lines = spark(before, "filter", "rate")
    assert idle_max == 0 and idle_lines["arrival"], "an idle stage is charted as a flat line at 0"
    assert spark(before, "end_to_end", "latency")[0] == 0

    # Load starts: requests arrive at filter (no member takes them), merge reports answers and latencies.
    stop = threading.Event()
    producer = Producer(producer_config(settings, "monitor-chart-test"))
    emitter = TelemetryEmitter(settings, "merge", "test-member")

    def load() -> None:
        i = 0
        while not stop.is_set():
            for _ in range(10):
                producer.produce(topics["requests"].topic, key=f"c{i}", value=b"{}")
                i += 1
            producer.poll(0)
            emitter.send(StageReport("merge", "merge-0", time.time() * 1000, 1.0, records=10, batches=1,
                                     answers={"ok": 9, "partial": 1},
                                     hops_ms={"merge": [30.0] * 10, "total": [90.0] * 9 + [450.0]},
                                     costs={"faq": COST}))  # fmt: skip
            emitter.producer.poll(0)
            stop.wait(0.5)
        producer.flush(10)
        emitter.producer.flush(10)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_for_state(monitor, loaded, timeout_s=60)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        after = render(browser, monitor + "/", ARTIFACTS / "monitor-charts.png")
    finally:
        stop.set()
        thread.join(15)
    busy_max, busy_lines = spark(after, "filter", "rate")
    assert busy_max > 5 and busy_lines["arrival"] != idle_lines["arrival"], (idle_lines, busy_lines)
    assert len(heights(idle_lines["arrival"])) == 1, "idle: one flat line"
    assert len(heights(busy_lines["arrival"])) > 1, f"the arrival line rose with the load: {busy_lines}"
    assert spark(after, "filter", "lag_s")[0] > 0, "records wait at filter, and the chart shows their age grow"
    assert spark(after, "merge", "p99_ms")[0] >= 30 and spark(after, "merge", "errors")[0] > 0
    e2e_max, e2e_lines = spark(after, "end_to_end", "latency")
    assert e2e_max >= 450 and e2e_lines["p50_ms"] and e2e_lines["p99_ms"]
    # What 1,000 faq answers cost: 2 ms and 3.5 ms of CPU and model per answer, one in ten from the cache.
    cost = re.search(r'<tr data-task="faq">(.*?)</tr>', after)
    assert cost, after[-3000:]
    assert re.findall(r"<td>([^<]*)</td>", cost[1])[2:] == ["2.00", "3.50", "0", "0", "100"], cost[1]
    assert (ARTIFACTS / "monitor-charts.png").stat().st_size > 10_000
