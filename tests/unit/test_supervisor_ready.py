"""`pipeline up`/demo call a pipeline ready only once the processes they started have turned their loops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from pipeline.local.supervisor import Member, Supervisor
from pipeline.settings import Settings


def test_a_health_file_left_by_an_earlier_process_is_not_ready(tmp_path: Path) -> None:
    supervisor = Supervisor({"generate": 1}, Settings(), tmp_path)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        member = Member("generate", 0, tmp_path / "generate-0.log", process=process)
        supervisor.members = [member]
        assert not supervisor.turning(), "no health record yet: still loading its model"
        # The group may still list the last run's member; its health file names the last run's process.
        member.health_path.write_bytes(orjson.dumps({"state": "stopping", "pid": process.pid + 100_000}))
        assert not supervisor.turning()
        member.health_path.write_bytes(orjson.dumps({"state": "running", "pid": process.pid}))
        assert supervisor.turning()
    finally:
        process.kill()
        process.wait()
