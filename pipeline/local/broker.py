"""The project's own local Kafka broker: one KRaft node, started from the jars `make setup` fetched.

Layout under ``settings.broker.kafka_dir`` (``.cache/kafka`` by default)::

    libs/                     broker jars (make setup; when absent, the project's .cache/kafka/libs)
    config/server.properties  rendered from Settings at every start
    config/log4j2.properties
    data/                     the log dirs: topics and the KRaft metadata log
    logs/broker.log           everything the broker prints
    broker.pid                the running broker's process id
    cluster.properties        cluster id and controller address the storage was formatted with

The broker runs detached (its own session), so it outlives the command that
started it; ``stop`` sends SIGTERM, which Kafka answers with a clean shutdown.

With ``kafka_brokers`` > 1 (``pipeline kafka start --brokers 3``) the folder holds
one such layout per node, ``node-1/`` ... ``node-N/``, plus ``cluster.properties``
with the id they were all formatted with; node i listens on ``kafka_port + 2(i-1)``
and its controller on ``kafka_controller_port + 2(i-1)`` (:func:`nodes`). Every node
is broker and controller; the quorum is static (``controller.quorum.voters``).
Clients bootstrap from every node (:func:`address`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipeline.errors import BrokerError, ConfigError
from pipeline.local.broker_config import LOG4J2_PROPERTIES, render_server_properties
from pipeline.local.secure import admin_settings, scram_format_args, tls_files
from pipeline.local.tls import ensure_tls
from pipeline.operations.admin import check_broker
from pipeline.settings import PROJECT_ROOT, Settings

PROJECT_LIBS = PROJECT_ROOT / ".cache" / "kafka" / "libs"
"""Where `make setup` puts the jars (ops/kafka/pom.xml pins the version)."""

LOG_ROTATE_BYTES = 50 * 1024 * 1024
"""At start, a log larger than this is moved to broker.log.1 first."""

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class BrokerPaths:
    root: Path

    @property
    def libs(self) -> Path:
        local = self.root / "libs"
        return local if local.is_dir() else PROJECT_LIBS

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def server_properties(self) -> Path:
        return self.root / "config" / "server.properties"

    @property
    def log4j2_properties(self) -> Path:
        return self.root / "config" / "log4j2.properties"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def cluster(self) -> Path:
        return self.root / "cluster.properties"


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    address: str
    up: bool  # a Kafka broker answers metadata requests at address
    pid: int | None  # the broker this project started, if its process is alive
    log: Path
    version: str | None = None  # of the jars, when they are there
    already_running: bool = False  # start found it running
    stopped: bool = False  # stop ended it
    seconds: float = 0.0  # how long start or stop took


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the local cluster: its id and Settings with its own ports and folder."""

    id: int
    settings: Settings  # kafka_brokers=1: this node alone
    voters: str = ""  # the static controller quorum when in a cluster

    @property
    def address(self) -> str:
        return address(self.settings)

    @property
    def controller(self) -> str:
        return f"{self.settings.broker.kafka_host}:{self.settings.broker.kafka_controller_port}"


def nodes(settings: Settings) -> list[Node]:
    """The nodes ``settings`` describe: one, or ``kafka_brokers`` with ports and folders of their own."""
    local = settings.broker
    n = local.kafka_brokers
    if n == 1:
        return [Node(1, settings)]
    if n < 3:
        raise ConfigError(f"kafka_brokers={n}: run 1 node, or 3 or more (replication 3, two in sync)")
    ports = [local.kafka_port + 2 * i for i in range(n)] + [local.kafka_controller_port + 2 * i for i in range(n)]
    if len(set(ports)) != len(ports):
        raise ConfigError(
            f"{n} brokers from port {local.kafka_port} and controller port {local.kafka_controller_port} "
            f"overlap ({sorted(ports)}): node i takes port + 2(i-1) and controller port + 2(i-1); "
            "use controller port = port + 1"
        )
    host = local.kafka_host
    voters = ",".join(f"{i + 1}@{host}:{local.kafka_controller_port + 2 * i}" for i in range(n))
    return [
        Node(
            i + 1,
            settings.replace(
                kafka_brokers=1,
                kafka_port=local.kafka_port + 2 * i,
                kafka_controller_port=local.kafka_controller_port + 2 * i,
                kafka_dir=local.kafka_dir / f"node-{i + 1}",
                kafka_heap=local.kafka_cluster_heap,
            ),
            voters,
        )
        for i in range(n)
    ]


def paths(settings: Settings) -> BrokerPaths:
    """The folder of the broker, or of the whole cluster (its nodes' folders are inside)."""
    return BrokerPaths(settings.broker.kafka_dir.resolve())


def address(settings: Settings) -> str:
    """The bootstrap servers of the local broker: every node's client address, comma-separated."""
    if settings.broker.kafka_brokers > 1:
        return ",".join(node.address for node in nodes(settings))
    return f"{settings.broker.kafka_host}:{settings.broker.kafka_port}"


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


def kafka_version(p: BrokerPaths) -> str | None:
    """The version of the broker jars (from kafka_2.13-<version>.jar), None when absent."""
    jars = sorted(p.libs.glob("kafka_2.13-*.jar"))
    return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else None


def status(settings: Settings) -> BrokerStatus:
    """The broker, or the cluster as a whole: up when every node answers (pid and log: node 1's)."""
    if settings.broker.kafka_brokers > 1:
        each = node_status(settings)
        return dataclasses.replace(each[0], address=address(settings), up=all(s.up for s in each))
    p = paths(settings)
    return BrokerStatus(
        address=address(settings), up=_answers(settings), pid=_running_pid(p), log=p.log, version=kafka_version(p)
    )


def node_status(settings: Settings) -> list[BrokerStatus]:
    """Each node's own status (one entry for a single broker)."""
    if settings.broker.kafka_brokers == 1:
        return [status(settings)]
    return [status(node.settings) for node in nodes(settings)]


def node_pid(node: Node) -> int | None:
    """The live process of ``node`` that this project started, if any."""
    return _running_pid(paths(node.settings))


def start(settings: Settings, *, timeout_s: float = 120.0, say: Say = _quiet) -> BrokerStatus:
    """Start the broker (every node of the cluster) and return once it answers; harmless when it runs."""
    if settings.broker.kafka_brokers > 1:
        return _start_cluster(settings, timeout_s, say)
    p = paths(settings)
    began = time.monotonic()
    with _lock(p):
        pid = _running_pid(p)
        if pid is not None:
            _wait_ready(settings, p, None, timeout_s)
            return dataclasses.replace(status(settings), already_running=True)
        _clear_stale_pid(p)
        for port in (settings.broker.kafka_port, settings.broker.kafka_controller_port):
            _check_port_free(settings, port, p)
        version = kafka_version(p)
        if version is None:
            raise ConfigError(f"no Kafka broker jars in {p.libs}: run `make setup` to fetch them")
        if settings.broker.kafka_secure and ensure_tls(tls_files(settings), settings.broker.kafka_host):
            say(f"made a CA and the broker's certificate in {tls_files(settings).tls} (keytool)")
        _write_configs(settings, p)
        _format_once(settings, p, say)
        local = settings.broker
        say(
            f"starting Kafka {version} at {address(settings)} "
            f"(controller {local.kafka_host}:{local.kafka_controller_port}, heap {local.kafka_heap})"
        )
        say(f"log: {p.log}")
        process = _spawn(settings, p)
        _wait_ready(settings, p, process, timeout_s)
    return dataclasses.replace(status(settings), seconds=time.monotonic() - began)


def start_node(node: Node, *, timeout_s: float = 120.0, say: Say = _quiet) -> BrokerStatus:
    """Start one node of a cluster (its folder formatted already) and wait until it answers."""
    began = time.monotonic()
    p = paths(node.settings)
    with _lock(p):
        process = _start_node(node, _cluster_id(node), say)
        _wait_ready(node.settings, p, process, timeout_s)
    return dataclasses.replace(status(node.settings), seconds=time.monotonic() - began)


def _start_cluster(settings: Settings, timeout_s: float, say: Say) -> BrokerStatus:
    began = time.monotonic()
    every = nodes(settings)
    with _lock(paths(settings)):
        cluster_id = _read_properties(paths(settings).cluster).get("cluster.id") or new_cluster_id()
        started = {node.id: _start_node(node, cluster_id, say) for node in every}
        already = all(process is None for process in started.values())
        paths(settings).cluster.write_text(f"cluster.id={cluster_id}\nbrokers={len(every)}\n")
        # A node answers once the controller quorum (a majority of nodes) has formed: start all, then wait.
        for node in every:
            _wait_ready(node.settings, paths(node.settings), started[node.id], timeout_s)
        _wait_registered(settings, len(every), timeout_s)
    total = status(settings)
    return dataclasses.replace(total, already_running=already, seconds=time.monotonic() - began)


def _cluster_id(node: Node) -> str:
    found = _read_properties(paths(node.settings).root.parent / "cluster.properties").get("cluster.id")
    if not found:
        raise ConfigError(f"no cluster id next to {paths(node.settings).root}: start the cluster with --brokers first")
    return found


def _start_node(node: Node, cluster_id: str, say: Say) -> subprocess.Popen[bytes] | None:
    """Spawn ``node`` unless it runs; None when it did."""
    settings, p = node.settings, paths(node.settings)
    if _running_pid(p) is not None:
        return None
    _clear_stale_pid(p)
    for port in (settings.broker.kafka_port, settings.broker.kafka_controller_port):
        _check_port_free(settings, port, p)
    version = kafka_version(p)
    if version is None:
        raise ConfigError(f"no Kafka broker jars in {p.libs}: run `make setup` to fetch them")
    if settings.broker.kafka_secure:
        raise ConfigError("a secure local cluster (--secure with --brokers > 1) is not built yet: use one node")
    p.server_properties.parent.mkdir(parents=True, exist_ok=True)
    p.server_properties.write_text(render_server_properties(settings, p.data, node_id=node.id, voters=node.voters))
    p.log4j2_properties.write_text(LOG4J2_PROPERTIES)
    if not (p.data / "meta.properties").exists():
        say(f"formatting node {node.id}'s storage in {p.data} (cluster id {cluster_id})")
        command = java_command(
            settings, p, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(p.server_properties)
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting {p.data} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    say(
        f"starting node {node.id}: Kafka {version} at {node.address} "
        f"(controller {node.controller}, heap {settings.broker.kafka_heap}); log: {p.log}"
    )
    return _spawn(settings, p)


def _wait_registered(settings: Settings, n: int, timeout_s: float) -> None:
    """Wait until the metadata lists all ``n`` brokers (each registered with the controller, unfenced)."""
    deadline = time.monotonic() + timeout_s
    found = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(BrokerError):
            found = check_broker(_local(settings), 3.0)
            if found >= n:
                return
        time.sleep(0.5)
    raise BrokerError(f"only {found} of {n} brokers registered at {address(settings)} within {timeout_s:.0f} s")


def stop(settings: Settings, *, timeout_s: float = 60.0) -> BrokerStatus:
    """Stop the broker this project started (SIGTERM, then wait); harmless when none runs.

    A cluster's nodes get SIGTERM together (each shuts down cleanly while the
    quorum is still there); the status returned is node 1's, ``stopped`` when
    any node was stopped.
    """
    if settings.broker.kafka_brokers > 1:
        began = time.monotonic()
        every = nodes(settings)
        pids = {node.id: node_pid(node) for node in every}
        for pid in pids.values():
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        done = [stop(node.settings, timeout_s=timeout_s) for node in every]
        first = next((d for d in done if d.stopped), done[0])
        return dataclasses.replace(
            first, address=address(settings), stopped=any(d.stopped for d in done), seconds=time.monotonic() - began
        )
    p = paths(settings)
    began = time.monotonic()
    pid = _running_pid(p)
    if pid is None:
        _clear_stale_pid(p)
        return status(settings)
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
    return dataclasses.replace(status(settings), pid=pid, stopped=True, seconds=time.monotonic() - began)


# -- helpers ----------------------------------------------------------------------


def _local(settings: Settings) -> Settings:
    """Settings whose clients talk to the local broker, whatever bootstrap_servers says."""
    local = settings.replace(bootstrap_servers=address(settings))
    return admin_settings(local) if settings.broker.kafka_secure else local


def _answers(settings: Settings, timeout_s: float = 3.0) -> bool:
    try:
        check_broker(_local(settings), timeout_s)
    except BrokerError:
        return False
    return True


@contextlib.contextmanager
def _lock(p: BrokerPaths) -> Iterator[None]:
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


def _running_pid(p: BrokerPaths) -> int | None:
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


def _clear_stale_pid(p: BrokerPaths) -> None:
    if p.pid_file.exists() and _running_pid(p) is None:
        p.pid_file.unlink(missing_ok=True)


def _check_port_free(settings: Settings, port: int, p: BrokerPaths) -> None:
    host = settings.broker.kafka_host
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    kafka = " (a Kafka broker this project did not start answers there)" if _answers(settings, 1.5) else ""
    raise BrokerError(
        f"{host}:{port} is already in use by another process{kafka}; no broker of ours runs "
        f"(no live pid in {p.pid_file}). Stop that process or pick other ports: "
        "--port/--controller-port or PIPELINE_KAFKA_PORT/PIPELINE_KAFKA_CONTROLLER_PORT"
    )


def _write_configs(settings: Settings, p: BrokerPaths) -> None:
    p.server_properties.parent.mkdir(parents=True, exist_ok=True)
    p.server_properties.touch(mode=0o600)  # in secure mode it holds the stores' and broker's passwords
    p.server_properties.write_text(render_server_properties(settings, p.data))
    p.log4j2_properties.write_text(LOG4J2_PROPERTIES)


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding (as StorageTool random-uuid)."""
    while True:
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka rejects ids that look like a flag
            return cluster_id


def _format_once(settings: Settings, p: BrokerPaths, say: Say) -> None:
    """Format the storage the first time; refuse a controller address other than the formatted one."""
    controller = f"{settings.broker.kafka_host}:{settings.broker.kafka_controller_port}"
    mode = "secure" if settings.broker.kafka_secure else "plaintext"
    if (p.data / "meta.properties").exists():
        recorded = _read_properties(p.cluster)
        if recorded.get("controller", controller) != controller:
            raise ConfigError(
                f"the storage in {p.data} was formatted for controller {recorded['controller']}, not {controller}: "
                f"use the same host and controller port, or delete {p.data} to start an empty broker"
            )
        if recorded.get("mode", "plaintext") != mode:
            raise ConfigError(
                f"the storage in {p.data} belongs to a {recorded.get('mode', 'plaintext')} broker, not a {mode} one: "
                "give the secure broker its own folder (PIPELINE_KAFKA_DIR, e.g. .cache/kafka-secure) and ports"
            )
        return
    cluster_id = new_cluster_id()
    say(f"formatting new KRaft storage in {p.data} (cluster id {cluster_id})")
    command = java_command(
        settings,
        p,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(p.server_properties),
        "--standalone",
        *(scram_format_args(settings) if settings.broker.kafka_secure else []),
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"formatting {p.data} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    p.cluster.write_text(f"cluster.id={cluster_id}\ncontroller={controller}\nmode={mode}\n")


def _read_properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _spawn(settings: Settings, p: BrokerPaths) -> subprocess.Popen[bytes]:
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


def _wait_ready(settings: Settings, p: BrokerPaths, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            p.pid_file.unlink(missing_ok=True)
            raise BrokerError(
                f"the broker exited with code {process.returncode} while starting; "
                f"last lines of {p.log}:\n{_tail(p.log)}"
            )
        if _answers(settings, timeout_s=2.0):
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the broker (pid {_running_pid(p)}) did not answer at {address(settings)} within "
                f"{timeout_s:.0f} s; see {p.log}; stop it with `pipeline kafka stop`"
            )
        time.sleep(0.5)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
