"""pipeline scale against running members: a stage grows and shrinks, the others are not touched."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from pipeline.local.control import ControlChannel, ScaleError, partitions_of, request_scale, write_state
from pipeline.operations.groups import group_members
from pipeline.settings import Settings
from tests.integration.harness import running_pipeline


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def test_scale_a_running_stage_up_and_down_without_touching_the_others(settings: Settings) -> None:
    with running_pipeline(settings, {"filter": 1, "split": 1}) as supervisor:
        channel = ControlChannel(supervisor, partitions_of(settings))
        write_state(supervisor)
        stop = threading.Event()

        def serve() -> None:  # what `pipeline up` does every turn
            while not stop.wait(0.2):
                channel.poll()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            before = supervisor.pids()
            state = request_scale(supervisor.log_dir, {"filter": 3})
            names = [m["name"] for m in state["members"] if m["stage"] == "filter"]
            assert names == ["filter-0", "filter-1", "filter-2"]
            wait_for(lambda: group_members(settings, ["filter"])["filter"] == 3, 90, "filter's group has 3 members")
            after = supervisor.pids()
            assert after["filter-0"] == before["filter-0"] and after["split-0"] == before["split-0"]

            with pytest.raises(ScaleError, match="at most 12 members"):
                request_scale(supervisor.log_dir, {"filter": 13})

            request_scale(supervisor.log_dir, {"filter": 1})
            wait_for(lambda: group_members(settings, ["filter"])["filter"] == 1, 60, "filter's group is back to 1")
            supervisor.check()
            wait_for(lambda: (supervisor.check(), set(supervisor.pids()))[1] == {"filter-0", "split-0"}, 30,
                     "the retired members exited and were not restarted")  # fmt: skip
            assert supervisor.pids()["split-0"] == before["split-0"] and supervisor.counts["filter"] == 1
        finally:
            stop.set()
            thread.join(5)
