"""Liveness: the health file a member writes, the probe that reads it, the watchdog that ends a stuck member."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pipeline.cli import main
from pipeline.runtime.liveness import EXIT_STALLED, HealthFile, read_health
from pipeline.settings import PROJECT_ROOT


def test_the_probe_passes_on_a_fresh_health_file_and_fails_on_a_stale_or_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "infer-0.health.json"
    assert main(["health", str(path)]) == 1
    HealthFile(path).write({"member": "infer-0", "state": "running", "processed": 3}, force=True)
    assert read_health(path)["processed"] == 3  # type: ignore[index]
    assert main(["health", str(path), "--max-age", "30"]) == 0
    time.sleep(0.2)
    assert main(["health", str(path), "--max-age", "0.1"]) == 1


def test_the_watchdog_ends_a_process_whose_loop_stops_beating() -> None:
    code = textwrap.dedent(
        """
        import time
        from pipeline.runtime.liveness import Watchdog
        dog = Watchdog("test member")
        dog.start()
        dog.beat("loop", 0.5)
        time.sleep(10)  # a call that never returns
        """
    )
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == EXIT_STALLED
    assert time.monotonic() - began < 8
    assert "'loop' overran its time" in done.stderr


def test_a_member_told_to_stop_exits_within_its_budget_while_its_main_thread_is_held(tmp_path: Path) -> None:
    """The main thread never gets back to its loop (as in librdkafka's commit with the broker away)."""
    script = tmp_path / "blocked.py"
    script.write_text(
        "import signal, threading, time\n"
        "from pipeline.runtime.liveness import exit_after_signal\n"
        "stop = threading.Event()\n"
        "signal.signal(signal.SIGTERM, lambda *_: stop.set())\n"
        "exit_after_signal('test member', 1.0)\n"
        "print('ready', flush=True)\n"
        "threading.Event().wait(60)  # never back in the loop that would see stop, like a blocked commit\n"
    )
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert 0.9 <= time.monotonic() - began < 5.0
    finally:
        process.kill()
