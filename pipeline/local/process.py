"""The broker's JVM process: its command line, spawning it detached, finding it again, waiting for it.

The broker runs detached (its own session), so it outlives the command that
started it; :func:`terminate` sends SIGTERM, which Kafka answers with a clean
shutdown. A broker is "ours" when the pid in its folder's ``broker.pid`` is
alive and runs ``kafka.Kafka`` with that folder's server.properties.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from pipeline.errors import BrokerError, ConfigError
from pipeline.local.layout import BrokerPaths, address
from pipeline.local.secure import admin_settings
from pipeline.operations.admin import check_broker
from pipeline.settings import Settings

LOG_ROTATE_BYTES = 50 * 1024 * 1024
"""At start, a log larger than this is moved to broker.log.1 first."""


def java_command(settings: Settings, p: BrokerPaths, main: str, *args: str) -> list[str]:
    """``java ... <main> <args>`` with the broker's classpath, heap and logging."""
    java = shutil.which("java")
    if java is None:
        raise ConfigError("java not found on PATH: install Java 17+ (e.g. apt-get install openjdk-17-jre-headless)")
    return [
        java,
        # Kafka's own defaults (kafka-run-class.sh): fixed heap, G1 with short pauses.
        f"-Xms{settings.broker.kafka_heap}",
        f"-Xmx{settings.broker.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={p.log4j2_properties}",
        "-cp",
        f"{p.libs}/*",
        main,
        *args,
    ]


def client_settings(settings: Settings) -> Settings:
    """Settings whose clients talk to the local broker, whatever bootstrap_servers says."""
    local = settings.replace(bootstrap_servers=address(settings))
    return admin_settings(local) if settings.broker.kafka_secure else local


def answers(settings: Settings, timeout_s: float = 3.0) -> bool:
    """Whether a Kafka broker answers metadata requests at the local broker's address."""
    try:
        check_broker(client_settings(settings), timeout_s)
    except BrokerError:
        return False
    return True


@contextlib.contextmanager
def lock(p: BrokerPaths) -> Iterator[None]:
    """Serialise concurrent starts: the second waits, then finds the broker running."""
    p.root.mkdir(parents=True, exist_ok=True)
    with (p.root / "start.lock").open("w") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def running_pid(p: BrokerPaths) -> int | None:
    """The pid in the pid file, if that process is alive and is this broker."""
    try:
        pid = int(p.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc (macOS): trust the pid file
    ours = b"kafka.Kafka" in cmdline and str(p.server_properties).encode() in cmdline
    return pid if ours else None


def clear_stale_pid(p: BrokerPaths) -> None:
    if p.pid_file.exists() and running_pid(p) is None:
        p.pid_file.unlink(missing_ok=True)


def check_port_free(settings: Settings, port: int, p: BrokerPaths) -> None:
    """Raise a clear error when ``port`` is taken (saying whether a Kafka broker of someone else's is there)."""
    host = settings.broker.kafka_host
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    kafka = " (a Kafka broker this project did not start answers there)" if answers(settings, 1.5) else ""
    raise BrokerError(
        f"{host}:{port} is already in use by another process{kafka}; no broker of ours runs "
        f"(no live pid in {p.pid_file}). Stop that process or pick other ports: "
        "--port/--controller-port or PIPELINE_KAFKA_PORT/PIPELINE_KAFKA_CONTROLLER_PORT"
    )


def spawn(settings: Settings, p: BrokerPaths) -> subprocess.Popen[bytes]:
    """Start ``kafka.Kafka`` detached, its output appended to the broker log; record its pid."""
    p.log.parent.mkdir(parents=True, exist_ok=True)
    if p.log.exists() and p.log.stat().st_size > LOG_ROTATE_BYTES:
        p.log.replace(p.log.with_name(p.log.name + ".1"))
    command = java_command(settings, p, "kafka.Kafka", str(p.server_properties))
    with p.log.open("ab") as log:
        log.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} pipeline kafka start\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=p.root,
            start_new_session=True,  # detached: not killed with the terminal or the command's group
        )
    p.pid_file.write_text(f"{process.pid}\n")
    return process


def wait_ready(settings: Settings, p: BrokerPaths, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Wait until the broker answers; raise with its log's tail when it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            p.pid_file.unlink(missing_ok=True)
            raise BrokerError(
                f"the broker exited with code {process.returncode} while starting; "
                f"last lines of {p.log}:\n{tail(p.log)}"
            )
        if answers(settings, timeout_s=2.0):
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the broker (pid {running_pid(p)}) did not answer at {address(settings)} within "
                f"{timeout_s:.0f} s; see {p.log}; stop it with `pipeline kafka stop`"
            )
        time.sleep(0.5)


def terminate(pid: int, p: BrokerPaths, timeout_s: float) -> None:
    """SIGTERM broker ``pid`` (Kafka's clean shutdown) and wait until it has exited."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            raise BrokerError(
                f"broker (pid {pid}) still running {timeout_s:.0f} s after SIGTERM; see {p.log}, "
                f"or force it with kill -9 {pid}"
            )
        time.sleep(0.2)
    p.pid_file.unlink(missing_ok=True)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
