"""pipeline monitor against the real broker: telemetry in, windowed numbers and lag out, the live page in Chromium.

The page is opened in headless Chromium (`make test` installs it: apt's
``chromium``); its screenshot is kept in .cache/test-artifacts/monitor.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
