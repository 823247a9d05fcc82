"""Liveness: the health file a member writes, the probe that reads it, the watchdog that ends a stuck member."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pipeline.cli import main
from pipeline.kafka.liveness import EXIT_STALLED, HealthFile, read_health


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
        from pipeline.kafka.liveness import Watchdog
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
