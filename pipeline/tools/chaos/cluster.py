"""The chaos suite's own cluster: a broker it may stop, and the stages as real processes.

The suite stops and kills things, so it never runs against a broker someone
else depends on: it starts its own single-node broker on other ports with its
own data folder (``chaos_settings``: 9492/9493, ``.cache/kafka-chaos``), and
refuses a broker folder that is the project's default one. Each scenario gets
a fresh pipeline under a topic prefix of its own; the broker stays up between
scenarios and is stopped at the end if the suite started it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ConfigError, PipelineError
from pipeline.local import broker
from pipeline.local.cluster import prepare, wait_ready
from pipeline.local.supervisor import Member, Supervisor
from pipeline.settings import PROJECT_ROOT, Settings

log = logging.getLogger("pipeline.chaos")

CHAOS_PORT = 9492
CHAOS_CONTROLLER_PORT = 9493
CHAOS_DIR = PROJECT_ROOT / ".cache" / "kafka-chaos"
LOG_ROOT = PROJECT_ROOT / ".cache" / "chaos-logs"


def chaos_settings(base: Settings, *, port: int = CHAOS_PORT, controller_port: int = CHAOS_CONTROLLER_PORT,
                   kafka_dir: Path = CHAOS_DIR) -> Settings:  # fmt: skip
    """``base`` pointed at the suite's own broker (ports and folder of its own)."""
    if kafka_dir.resolve() == Settings().broker.kafka_dir.resolve():
        raise ConfigError(
            f"the chaos suite stops and restarts its broker: give it a folder of its own, not {kafka_dir}"
        )
    return base.replace(
        kafka_port=port,
        kafka_controller_port=controller_port,
        kafka_dir=kafka_dir,
        bootstrap_servers=f"{base.broker.kafka_host}:{port}",
    )


class ChaosBroker:
    """The suite's broker: started once, stopped and started by scenarios, stopped at the end."""

    def __init__(self, settings: Settings, say: broker.Say) -> None:
        self.settings = settings
        self.say = say
        self.started = False

    def __enter__(self) -> ChaosBroker:
        status = broker.status(self.settings)
        if not status.up:
            broker.start(self.settings, say=self.say)
            self.started = True
        self.say(f"chaos broker at {broker.address(self.settings)} ({self.settings.broker.kafka_dir})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            broker.stop(self.settings)

    def pid(self) -> int | None:
        try:
            return int(broker.paths(self.settings).pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> float:
        """Stop the broker for real (SIGTERM, clean shutdown); seconds it took.

        Raises when no broker of ours was stopped, its process still runs or
        something still listens on its port: a scenario that means to take the
        broker away must not carry on against one that stayed (e.g. a broker on
        the port that another command started, which this one cannot stop).
        """
        pid = self.pid()
        stopped = broker.stop(self.settings)
        self.verify_down(pid if stopped.pid is None else stopped.pid, stopped.stopped)
        return stopped.seconds

    def verify_down(self, pid: int | None, stopped: bool) -> None:
        """Raise PipelineError unless broker process ``pid`` is gone and its port refuses connections."""
        where = broker.address(self.settings)
        if not stopped or pid is None:
            raise PipelineError(f"no broker of ours was running at {where} to stop ({self.settings.broker.kafka_dir})")
        if broker.alive(pid):
            raise PipelineError(f"the broker at {where} (pid {pid}) still runs after stop")
        if port_open(self.settings.broker.kafka_host, self.settings.broker.kafka_port):
            raise PipelineError(f"something still accepts connections at {where} after the broker (pid {pid}) stopped")

    def watch_down(self, seconds: float, every_s: float = 0.25) -> list[float]:
        """Sleep ``seconds`` while probing the broker's port; when (time.time()) it accepted a connection."""
        reachable = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if port_open(
                self.settings.broker.kafka_host, self.settings.broker.kafka_port, timeout_s=min(every_s, left)
            ):
                reachable.append(time.time())
            time.sleep(max(0.0, min(every_s, deadline - time.monotonic())))
        return reachable

    def start(self) -> float:
        """Start it again and wait until it answers; seconds it took."""
        return broker.start(self.settings).seconds


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class Pipeline:
    """The stages of one scenario as supervised processes, restarted when they die."""

    def __init__(self, settings: Settings, supervisor: Supervisor, log_dir: Path, startup_restarts: int = 0) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.log_dir = log_dir
        self.startup_restarts = startup_restarts

    def member(self, name: str) -> Member:
        return next(m for m in self.supervisor.members if m.name == name)

    def pid(self, name: str) -> int:
        process = self.member(name).process
        if process is None:
            raise PipelineError(f"member {name} has no process")
        return process.pid

    def signal(self, name: str, signum: int) -> int:
        """Send a real signal to member ``name``'s process; its pid."""
        pid = self.pid(name)
        os.kill(pid, signum)
        log.info("sent %s to %s (pid %d)", signal.Signals(signum).name, name, pid)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout_s: float = 30.0) -> float | None:
        """When the supervisor started a new process for ``name`` (time.time()), or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            process = self.member(name).process
            if process is not None and process.pid != old_pid and process.poll() is None:
                return time.time()
            time.sleep(0.05)
        return None

    def restarts(self) -> int:
        """Restarts since the scenario began (not those while the pipeline was starting)."""
        return sum(m.restarts for m in self.supervisor.members) - self.startup_restarts


def process_ids(broker: ChaosBroker, pipeline: Pipeline) -> Callable[[], dict[str, int]]:
    """The live pids of the members and the broker, read again on every call (members restart)."""

    def pids() -> dict[str, int]:
        found = pipeline.supervisor.pids()
        pid = broker.pid()
        if pid is not None:
            found["broker"] = pid
        return found

    return pids


@contextmanager
def running(settings: Settings, counts: dict[str, int], name: str, **member_overrides: object) -> Iterator[Pipeline]:
    """A fresh pipeline under prefix ``chaos-<scenario>-<hex>-``; topics deleted afterwards."""
    from pipeline.operations.admin import delete_prefixed

    prefix = f"chaos-{name}-{uuid.uuid4().hex[:6]}-"
    scoped = settings.replace(prefix=prefix)
    log_dir = LOG_ROOT / prefix.rstrip("-")
    prepare(scoped, say=lambda *_: None)
    supervisor = Supervisor(counts, scoped.replace(**member_overrides), log_dir)
    supervisor.start()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(supervisor, stop), name="chaos-supervisor", daemon=True)
    try:
        if not wait_ready(scoped, counts, stop, timeout_s=240, on_wait=supervisor.check, turning=supervisor.turning):
            raise PipelineError(f"the pipeline {prefix} did not come up within 240 s; logs in {log_dir}")
        watcher.start()
        # A member that dies right after joining (seen: merge's restore hitting
        # NOT_LEADER_FOR_PARTITION on topics just created) is restarted before
        # the scenario begins, and counted apart from the scenario's restarts.
        time.sleep(3.0)
        startup = sum(m.restarts for m in supervisor.members) + sum(
            m.process is not None and m.process.poll() is not None for m in supervisor.members
        )
        if startup and not wait_ready(scoped, counts, stop, timeout_s=120):
            raise PipelineError(f"the pipeline {prefix} did not come back after a crash at start; logs in {log_dir}")
        if startup:
            time.sleep(3.0)
        yield Pipeline(scoped, supervisor, log_dir, startup_restarts=sum(m.restarts for m in supervisor.members))
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(5)
        supervisor.stop()
        try:
            delete_prefixed(scoped)
        except PipelineError as exc:
            log.warning("could not delete the topics of %s: %s", prefix, exc)


def _watch(supervisor: Supervisor, stop: threading.Event) -> None:
    # Like `pipeline up`: a member that exits is restarted (after the supervisor's backoff).
    while not stop.wait(0.1):
        supervisor.check()
