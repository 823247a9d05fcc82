"""Run the stages as local processes, restart the ones that die, stop them all together.

This is ``pipeline up``'s engine: on one machine it plays the part docker
compose or Kubernetes plays elsewhere. Each member is ``pipeline run STAGE``
with ``PIPELINE_MEMBER`` set to its index, so a restarted member takes over
its predecessor's transactional id and fences whatever it left open.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.models.gpu_memory import check_members
from pipeline.runtime.liveness import read_health
from pipeline.settings import Settings

log = logging.getLogger("pipeline.local.supervisor")

# A member that lived this long is healthy again: its restart delay resets.
HEALTHY_AFTER_S = 30.0
MAX_BACKOFF_S = 15.0


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with ``PIPELINE_*`` replaced by ``settings``: the child builds the same Settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(settings.to_env(secrets=True))  # the child's own environment, never printed
    return env


@dataclass
class Member:
    stage: str
    index: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.5
    restart_at: float | None = None
    metrics_port: int = 0  # kept across restarts, so a scrape target stays where it was
    retiring_since: float | None = None  # asked to stop for good (scaled down): never restarted

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.index}"

    @property
    def health_path(self) -> Path:
        return self.log_path.with_suffix(".health.json")

    def health(self) -> dict[str, Any] | None:
        """The member's last health record (None before its loop first turned)."""
        return read_health(self.health_path)


@dataclass
class Supervisor:
    counts: dict[str, int]
    settings: Settings
    log_dir: Path
    # Members run the code of this checkout instead of this process's (the bench's --tree rows).
    source: Path | None = None
    members: list[Member] = field(default_factory=list)
    # check() may be called from more than one thread (a watcher and a test).
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        check_members(self.counts, self.settings)  # the GPU members' budgets must fit the device
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stage, count in self.counts.items():
            for index in range(count):
                member = Member(stage, index, self.log_dir / f"{stage}-{index}.log")
                self.members.append(member)
                self._spawn(member)

    def _spawn(self, member: Member) -> None:
        env = child_env(self.settings)
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
            # This checkout's models, or the other would export its own (minutes per model).
            env["PIPELINE_MODEL_CACHE_DIR"] = str(self.settings.models.model_cache_dir)
        env.update(
            PIPELINE_MEMBER=str(member.index), PIPELINE_HEALTH_FILE=str(member.health_path), PYTHONUNBUFFERED="1"
        )
        if self.settings.liveness.metrics_port:
            # Each member its own port from the base: the lowest one no other member has.
            if not member.metrics_port:
                taken = {m.metrics_port for m in self.members}
                member.metrics_port = next(
                    p for p in range(self.settings.liveness.metrics_port, 65536) if p not in taken
                )
            env["PIPELINE_METRICS_PORT"] = str(member.metrics_port)
        member.health_path.unlink(missing_ok=True)
        with member.log_path.open("ab") as out:
            member.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "run", member.stage],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own process group: Ctrl-C reaches the supervisor, which stops
                # members in order instead of all at once.
                start_new_session=True,
                cwd=self.source,  # python -m imports from the working directory first
            )
        member.started = time.monotonic()
        member.restart_at = None
        log.info("started %s (pid %d), log %s", member.name, member.process.pid, member.log_path)

    def check(self) -> None:
        """Restart members that died, with a growing delay for ones that keep dying."""
        with self.lock:
            self._check()

    def _check(self) -> None:
        now = time.monotonic()
        self._reap_retired(now)
        for member in self.members:
            if member.process is None or member.retiring_since is not None:
                continue
            if member.process.poll() is None:
                self._kill_if_stuck(member)
                continue
            if member.restart_at is None:
                if now - member.started > HEALTHY_AFTER_S:
                    member.backoff = 0.5
                member.restart_at = now + member.backoff
                log.warning(
                    "%s exited with %s; restarting in %.1f s (see %s)",
                    member.name,
                    member.process.returncode,
                    member.backoff,
                    member.log_path,
                )
                member.backoff = min(member.backoff * 2, MAX_BACKOFF_S)
            elif now >= member.restart_at:
                member.restarts += 1
                self._spawn(member)

    # -- scaling: members added and retired while the others run ------------------

    def resize(self, stage: str, count: int) -> tuple[list[str], list[str]]:
        """Give ``stage`` ``count`` members: start new ones, or retire the newest (SIGUSR1: leave, then reaped).

        The others keep running; cooperative-sticky rebalancing moves only the
        partitions the new or retiring members take or give up. Returns the
        names started and retired.
        """
        with self.lock:
            active = [m for m in self.members if m.stage == stage and m.retiring_since is None]
            started: list[str] = []
            retired: list[str] = []
            if count > len(active):
                # Indexes not held by any member, retiring ones included, so no
                # two live processes share a transactional id.
                used = {m.index for m in self.members if m.stage == stage}
                free = (i for i in range(len(used) + count) if i not in used)
                for index in [next(free) for _ in range(count - len(active))]:
                    member = Member(stage, index, self.log_dir / f"{stage}-{index}.log")
                    self.members.append(member)
                    self._spawn(member)
                    started.append(member.name)
            for member in sorted(active, key=lambda m: m.index)[count:]:
                member.retiring_since = time.monotonic()
                if member.process is not None and member.process.poll() is None:
                    # SIGUSR1, not SIGTERM: a retired member leaves its group for good, so its
                    # partitions move now, not after the session timeout a static member's
                    # successor would get (pipeline.runtime.runner.StageRunner._leave_group).
                    os.killpg(member.process.pid, signal.SIGUSR1)
                retired.append(member.name)
            self.counts[stage] = count
            return started, retired

    def _reap_retired(self, now: float) -> None:
        """Forget retired members that exited; kill those that overran their shutdown time."""
        for member in [m for m in self.members if m.retiring_since is not None]:
            process, since = member.process, member.retiring_since or now
            if process is None or process.poll() is not None:
                self.members.remove(member)
                log.info("%s retired", member.name)
            elif now - since > self.settings.liveness.shutdown_timeout_s + 2.0:
                log.warning("%s did not stop in time; killing it", member.name)
                os.killpg(process.pid, signal.SIGKILL)

    def _kill_if_stuck(self, member: Member) -> None:
        """A member's own watchdog ends it when it stalls; this catches one that cannot (stopped, wedged)."""
        health = member.health()
        if health is None or member.process is None:
            return
        silent = time.time() - float(health.get("at", 0))
        if silent > 2 * self.settings.liveness.stall_timeout_s and health.get("state") != "stopping":
            log.warning("%s has not turned its loop for %.0f s; killing it to restart it", member.name, silent)
            os.killpg(member.process.pid, signal.SIGKILL)

    def turning(self) -> bool:
        """Whether every member this supervisor started has turned its loop (its health file is its own).

        A consumer group can still list the members of an earlier run for a
        session timeout (static membership sends no LeaveGroup), so group
        membership alone would call a pipeline ready whose processes are still
        loading their models.
        """
        for member in self.members:
            health = member.health()
            if member.process is None or health is None or health.get("pid") != member.process.pid:
                return False
        return True

    def pids(self) -> dict[str, int]:
        return {m.name: m.process.pid for m in self.members if m.process is not None and m.process.poll() is None}

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM everyone (upstream stages first), then SIGKILL what is left."""
        if timeout_s is None:  # a member ends itself within shutdown_timeout_s, even with the broker down
            timeout_s = self.settings.liveness.shutdown_timeout_s + 2.0
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                os.killpg(member.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for member in self.members:
            if member.process is None:
                continue
            try:
                member.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", member.name)
                os.killpg(member.process.pid, signal.SIGKILL)
                member.process.wait()
