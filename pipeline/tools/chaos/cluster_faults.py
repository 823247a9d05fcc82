"""The three-broker scenarios: a broker fault under a steady stream, counted from outside.

===============  ============================================================
leader-kill      SIGKILL the broker leading the most partitions; restart it
rolling-restart  every broker stopped (SIGTERM) and started again, one by one,
                 each back in sync before the next
controller-kill  SIGKILL the active KRaft controller; restart it
pause-broker     SIGSTOP the broker leading the most partitions 30 s (10 s
                 short), then SIGCONT
===============  ============================================================

All run against one pipeline (filter, split, infer, merge as supervised
processes) on the cluster of :mod:`pipeline.tools.chaos.brokers`, one after
the other, each with its own requests; the cluster is whole again (every
replica in sync) before the next begins. Each row counts sent, the answers by
code, lost, duplicated, p99 overall and while the fault acted, and the member
restarts during the scenario (none is expected: a broker fault is the
brokers' to absorb). A fault that did not happen (the process still alive
after SIGKILL, leadership or the controller never moved, the process not
stopped) is a problem on the row, so the scenario fails however the answers
look.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.errors import PipelineError
from pipeline.flow import STAGE_NAMES
from pipeline.local.process import alive
from pipeline.tools.bench.loadgen import Arrival
from pipeline.tools.chaos.brokers import ChaosCluster, stopped
from pipeline.tools.chaos.cluster import Pipeline, running
from pipeline.tools.chaos.load import Load, Say
from pipeline.tools.chaos.tally import Row, percentile, render

KILL = signal.SIGKILL
"""The signal that ends a broker at once (no clean shutdown, no leadership handed over)."""
RESTART_PROBLEM = "(a member exited: see its log)"


@dataclass
class Fault:
    """What a fault did: when it acted, and what showed it happened (or did not)."""

    began: float = 0.0  # time.time() when it started
    ended: float = 0.0  # when the cluster was whole again
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClusterOptions:
    short: bool = False
    rate: float = 10.0  # steady requests per second
    timeout_ms: int = 30_000  # each request's deadline
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGE_NAMES, 1))

    @property
    def before_s(self) -> float:
        return 5.0 if self.short else 15.0

    @property
    def after_s(self) -> float:
        return 5.0 if self.short else 20.0

    @property
    def down_s(self) -> float:
        """How long a killed broker stays down before it is started again."""
        return 5.0 if self.short else 30.0

    @property
    def pause_s(self) -> float:
        return 10.0 if self.short else 30.0


FaultFn = Callable[[ChaosCluster, ClusterOptions, Say], Fault]


def leader_kill(cluster: ChaosCluster, opts: ClusterOptions, say: Say) -> Fault:
    target = cluster.busiest()
    led = cluster.leadership().led.get(target, 0)
    fault = Fault(began=time.time())
    pid = cluster.signal(target, KILL)
    say(f"leader-kill: SIGKILL broker {target} (pid {pid}), leader of {led} partitions")
    _check_killed(cluster, fault, target, pid)
    moved = cluster.wait_led_elsewhere(target)
    if moved is None:
        fault.problems.append(f"broker {target} still leads partitions 20 s after SIGKILL: leadership did not move")
    else:
        fault.notes.append(
            f"broker {target} (pid {pid}, {led} partitions led) killed; leadership moved in {moved:.1f} s"
        )
    _restart_after(cluster, fault, target, opts, say)
    return fault


def controller_kill(cluster: ChaosCluster, opts: ClusterOptions, say: Say) -> Fault:
    target, epoch = cluster.controller()
    fault = Fault(began=time.time())
    pid = cluster.signal(target, KILL)
    say(f"controller-kill: SIGKILL broker {target} (pid {pid}), the active controller (epoch {epoch})")
    _check_killed(cluster, fault, target, pid)
    took_over = cluster.wait_new_controller(target, epoch)
    if took_over is None:
        fault.problems.append(f"no controller other than {target} after epoch {epoch} within 20 s: it did not move")
    else:
        fault.notes.append(
            f"controller {target} (epoch {epoch}, pid {pid}) killed; broker {took_over[0]} took over "
            f"(epoch {took_over[1]}) in {time.time() - fault.began:.1f} s"
        )
    _restart_after(cluster, fault, target, opts, say)
    return fault


def rolling_restart(cluster: ChaosCluster, opts: ClusterOptions, say: Say) -> Fault:
    fault = Fault(began=time.time())
    for node in sorted(cluster.nodes):
        began = time.time()
        pid = cluster.stop(node)
        if alive(pid):
            fault.problems.append(f"broker {node} (pid {pid}) still runs after its stop: the restart did not happen")
        seconds = cluster.restart(node)
        new = cluster.pid(node)
        if new == pid:
            fault.problems.append(f"broker {node} has the same process (pid {pid}) after its restart")
        in_sync = cluster.wait_in_sync()
        say(f"rolling-restart: broker {node} pid {pid} -> {new}, answering {seconds:.1f} s after start")
        fault.notes.append(
            f"broker {node}: pid {pid} -> {new}; stopped and back in sync in {time.time() - began:.1f} s "
            f"(in sync {in_sync:.1f} s after it answered)"
        )
    fault.ended = time.time()
    return fault


def pause_broker(cluster: ChaosCluster, opts: ClusterOptions, say: Say) -> Fault:
    target = cluster.busiest()
    fault = Fault(began=time.time())
    pid = cluster.signal(target, signal.SIGSTOP)
    say(f"pause-broker: SIGSTOP broker {target} (pid {pid}) for {opts.pause_s:.0f} s")
    try:
        if not cluster.wait_stopped(pid):
            fault.problems.append(f"broker {target} (pid {pid}) is not stopped after SIGSTOP: the pause did not happen")
        moved = cluster.wait_led_elsewhere(target, timeout_s=opts.pause_s)
        still = stopped(pid)
        time.sleep(max(0.0, fault.began + opts.pause_s - time.time()))
        if not (still and stopped(pid)):
            fault.problems.append(f"broker {target} (pid {pid}) ran again before its {opts.pause_s:.0f} s were up")
    finally:
        cluster.signal(target, signal.SIGCONT)
    if moved is None:
        fault.problems.append(f"broker {target} kept its leadership through a {opts.pause_s:.0f} s pause")
    else:
        fault.notes.append(
            f"broker {target} (pid {pid}) paused {opts.pause_s:.0f} s; leadership moved in {moved:.1f} s"
        )
    in_sync = cluster.wait_in_sync()
    if cluster.pid(target) != pid:
        fault.problems.append(f"broker {target} was restarted (pid {pid} -> {cluster.pid(target)}), not continued")
    fault.notes.append(f"broker {target} continued; cluster in sync {in_sync:.1f} s after SIGCONT")
    fault.ended = time.time()
    return fault


def _check_killed(cluster: ChaosCluster, fault: Fault, node: int, pid: int) -> None:
    if not cluster.wait_gone(pid, 5.0):
        fault.problems.append(f"broker {node} (pid {pid}) still runs 5 s after SIGKILL: the fault did not happen")


def _restart_after(cluster: ChaosCluster, fault: Fault, node: int, opts: ClusterOptions, say: Say) -> None:
    time.sleep(max(0.0, fault.began + opts.down_s - time.time()))
    if cluster.pid_or_none(node) is not None:
        fault.problems.append(f"broker {node} runs again before it was restarted: the fault did not happen")
    seconds = cluster.restart(node)
    in_sync = cluster.wait_in_sync()
    say(f"broker {node} answering {seconds:.1f} s after its restart; cluster in sync {in_sync:.1f} s later")
    fault.notes.append(f"broker {node} down {opts.down_s:.0f} s, then in sync {seconds + in_sync:.1f} s after restart")
    fault.ended = time.time()


FAULTS: dict[str, FaultFn] = {
    "leader-kill": leader_kill,
    "rolling-restart": rolling_restart,
    "controller-kill": controller_kill,
    "pause-broker": pause_broker,
}
CLUSTER_ORDER = tuple(FAULTS)


def run_scenario(cluster: ChaosCluster, pipeline: Pipeline, name: str, opts: ClusterOptions, say: Say) -> Row:
    """One fault under a steady stream of ``opts.rate`` requests/s; its row."""
    pids = lambda: {**pipeline.supervisor.pids(), **cluster.pids()}  # noqa: E731
    load = Load(pipeline.settings, name, opts.timeout_ms, pids)
    restarts = pipeline.restarts()
    load.start(opts.rate)
    time.sleep(opts.before_s)
    try:
        fault = FAULTS[name](cluster, opts, say)
    finally:
        time.sleep(opts.after_s)
        load.drain(say)
    acked = dict(load.sender.acked)
    row = load.row([fault.ended], pipeline.restarts() - restarts)
    row.event_p99_ms = event_p99(acked, load.reader.snapshot(), fault.began, fault.ended)
    row.notes.append(
        f"{opts.rate:.1f} requests/s; fault from +{opts.before_s:.0f} s, acting {fault.ended - fault.began:.1f} s"
    )
    row.notes.extend(fault.notes)
    row.problems.extend(fault.problems)
    if row.restarts:
        row.problems.append(
            f"{row.restarts} member restart(s) during a broker fault, logs in {pipeline.log_dir} {RESTART_PROBLEM}"
        )
    return row


def event_p99(acked: dict[str, float], arrivals: Sequence[Arrival], began: float, ended: float) -> float | None:
    """p99 (ms) from produce to first answer of the requests sent while the fault acted."""
    first: dict[str, float] = {}
    for arrival in arrivals:
        first.setdefault(arrival.id, arrival.at)
    latencies = sorted((first[i] - t) * 1000 for i, t in acked.items() if began <= t <= ended and i in first)
    return percentile(latencies, 99)


def run_cluster(cluster: ChaosCluster, names: Sequence[str], opts: ClusterOptions, say: Say) -> list[Row]:
    """The named scenarios against one pipeline on ``cluster``, in turn; one row each."""
    rows = []
    with running(cluster.settings, opts.counts, "cluster") as pipeline:
        for name in names:
            say(f"{name}: starting{' (short)' if opts.short else ''}")
            began = time.monotonic()
            try:
                row = run_scenario(cluster, pipeline, name, opts, say)
            except PipelineError as exc:  # one scenario that cannot run does not end the others
                row = Row(name, problems=[f"could not run: {exc}"])
                cluster.wait_in_sync()
            say(f"{name}: done in {time.monotonic() - began:.0f} s")
            say("\n" + render([row]))
            rows.append(row)
    return rows
