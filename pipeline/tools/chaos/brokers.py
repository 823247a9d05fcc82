"""The chaos suite's three-broker cluster: faults done to its nodes with real signals, and checks that
each fault really happened.

The cluster is the local one of ``pipeline kafka start --brokers 3`` (every
node broker and controller, replication 3, min ISR 2), on ports and in a
folder of its own (``cluster_settings``: 19100.., ``/tmp/cluster-kafka`` unless
told otherwise), never the project's default broker, since nodes are killed
and paused. It is started if nothing answers there, and stopped at the end
if the suite started it.

What a fault is checked against, from outside the broker:

* a node's process: its pid from the node's folder, alive or not
  (:func:`pipeline.local.process.alive`), stopped or not (``/proc/PID/stat``);
* partition leadership: the cluster's metadata, as any client sees it;
* the active KRaft controller: the nodes' own logs ("Completed transition to
  Leader"/"FollowerState(... epoch=E, leader=N"), the highest epoch wins;
  Kafka's Admin API for it (DescribeQuorum) is not in librdkafka.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from pipeline.errors import ConfigError, PipelineError
from pipeline.local import broker
from pipeline.local.layout import Node, Say
from pipeline.local.process import alive
from pipeline.operations.admin import Leadership, leadership
from pipeline.settings import Settings

CLUSTER_PORT = 19100
CLUSTER_DIR = Path("/tmp/cluster-kafka")
BROKERS = 3

_TRANSITION = re.compile(r"\[RaftManager id=(\d+)\] Completed transition to (\w+)\((.*)")
_EPOCH = re.compile(r"\bepoch=(\d+)")
_LEADER = re.compile(r"\bleader=(\d+)")


def cluster_settings(base: Settings, *, port: int = CLUSTER_PORT, kafka_dir: Path = CLUSTER_DIR) -> Settings:
    """``base`` pointed at the suite's own three-broker cluster (node i on port + 2(i-1), controller + 1)."""
    if kafka_dir.resolve() == Settings().broker.kafka_dir.resolve():
        raise ConfigError(f"the cluster chaos kills and pauses brokers: give it a folder of its own, not {kafka_dir}")
    settings = base.replace(kafka_brokers=BROKERS, kafka_port=port, kafka_controller_port=port + 1, kafka_dir=kafka_dir)
    return settings.replace(bootstrap_servers=broker.address(settings))


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): state T in /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


class ChaosCluster:
    """The suite's cluster: started once, its nodes killed, paused and restarted by the scenarios."""

    def __init__(self, settings: Settings, say: Say) -> None:
        if settings.broker.kafka_brokers < BROKERS:
            raise ConfigError(f"the cluster scenarios need {BROKERS} brokers, not {settings.broker.kafka_brokers}")
        self.settings = settings
        self.say = say
        self.started = False
        self.nodes: dict[int, Node] = {node.id: node for node in broker.nodes(settings)}

    def __enter__(self) -> ChaosCluster:
        if not broker.status(self.settings).up:
            broker.start(self.settings, timeout_s=300, say=self.say)
            self.started = True
        self.say(f"chaos cluster at {broker.address(self.settings)} ({self.settings.broker.kafka_dir})")
        self.wait_in_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes.values():  # a node a failed scenario left paused would not stop
            pid = broker.node_pid(node)
            if pid is not None and stopped(pid):
                os.kill(pid, 18)  # SIGCONT
        if self.started:
            broker.stop(self.settings)

    def pid(self, node_id: int) -> int:
        pid = broker.node_pid(self.nodes[node_id])
        if pid is None:
            raise PipelineError(f"broker {node_id} of {broker.address(self.settings)} runs no process of ours")
        return pid

    def pid_or_none(self, node_id: int) -> int | None:
        return broker.node_pid(self.nodes[node_id])

    def pids(self) -> dict[str, int]:
        """Every running node's pid, named broker-N (for the memory sampler)."""
        found = {f"broker-{i}": broker.node_pid(node) for i, node in self.nodes.items()}
        return {name: pid for name, pid in found.items() if pid is not None}

    def leadership(self) -> Leadership:
        return leadership(self.settings)

    def busiest(self) -> int:
        """The node leading the most partitions."""
        led = self.leadership().led
        return max(self.nodes, key=lambda i: (led.get(i, 0), -i))

    def controller(self) -> tuple[int, int]:
        """The active controller's node id and its epoch, from the nodes' logs (highest epoch wins)."""
        best = (-1, -1)  # (epoch, leader)
        for node in self.nodes.values():
            try:
                text = broker.paths(node.settings).log.read_text(errors="replace")
            except OSError:
                continue
            for match in _TRANSITION.finditer(text):
                local, state, rest = int(match[1]), match[2], match[3]
                epoch = _EPOCH.search(rest)
                if epoch is None:
                    continue
                leader = local if state == "Leader" else None
                if state == "FollowerState" and (named := _LEADER.search(rest)):
                    leader = int(named[1])
                if leader is not None and int(epoch[1]) > best[0]:
                    best = (int(epoch[1]), leader)
        if best[1] < 0:
            raise PipelineError(f"no node of {broker.address(self.settings)} logged an active controller")
        return best[1], best[0]

    def signal(self, node_id: int, signum: int) -> int:
        """Send a real signal to node ``node_id``'s process; its pid."""
        pid = self.pid(node_id)
        os.kill(pid, signum)
        return pid

    def stop(self, node_id: int) -> int:
        """Stop one node cleanly (SIGTERM, then wait until it exited); its pid."""
        pid = self.pid(node_id)
        broker.stop(self.nodes[node_id].settings)
        return pid

    def restart(self, node_id: int) -> float:
        """Start node ``node_id`` again and wait until it answers; seconds it took."""
        return broker.start_node(self.nodes[node_id], timeout_s=180).seconds

    def wait_gone(self, pid: int, timeout_s: float = 10.0) -> bool:
        """Whether process ``pid`` ended within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def wait_stopped(self, pid: int, timeout_s: float = 3.0) -> bool:
        """Whether process ``pid`` is stopped within ``timeout_s`` (a JVM's threads stop one by one)."""
        deadline = time.monotonic() + timeout_s
        while not stopped(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def wait_led_elsewhere(self, node_id: int, timeout_s: float = 20.0) -> float | None:
        """Seconds until node ``node_id`` leads no partition and every partition has a leader; None if never."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            try:
                now = self.leadership()
            except PipelineError:
                now = None
            if now is not None and now.led.get(node_id, 0) == 0 and now.leaderless == 0:
                return time.monotonic() - began
            time.sleep(0.2)
        return None

    def wait_new_controller(self, old: int, epoch: int, timeout_s: float = 20.0) -> tuple[int, int] | None:
        """The controller that took over from ``old`` (a later epoch, another node), or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                now, now_epoch = self.controller()
            except PipelineError:
                now, now_epoch = -1, -1
            if now_epoch > epoch and now != old:
                return now, now_epoch
            time.sleep(0.2)
        return None

    def wait_in_sync(self, timeout_s: float = 180.0) -> float:
        """Seconds until every node is registered, every partition led and every replica in sync."""
        began = time.monotonic()
        last: Leadership | None = None
        while time.monotonic() - began < timeout_s:
            try:
                last = self.leadership()
                if len(last.brokers) == len(self.nodes) and last.leaderless == 0 and last.under_replicated == 0:
                    return time.monotonic() - began
            except PipelineError:
                pass
            time.sleep(0.5)
        raise PipelineError(
            f"the cluster {broker.address(self.settings)} not back in sync in {timeout_s:.0f} s: {last}"
        )
