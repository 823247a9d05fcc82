"""The cluster chaos's own judgement, without a broker: who the active controller is, from the nodes' logs,
and the p99 over the requests sent while a fault acted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError, PipelineError
from pipeline.local import broker
from pipeline.settings import Settings
from pipeline.tools.bench.loadgen import Arrival
from pipeline.tools.chaos.brokers import ChaosCluster, cluster_settings
from pipeline.tools.chaos.cluster_faults import event_p99

LEADER = (
    "[2026-12-05 07:44:52,700] INFO [RaftManager id={id}] Completed transition to Leader(localVoterNode=VoterNode("
    "voterKey=ReplicaKey(id={id}, directoryId=x), listeners=Endpoints(endpoints={{}})), epoch={epoch}, "
    "epochStartOffset=0, highWatermark=Optional.empty) from CandidateState(...) (org.apache.kafka.raft.QuorumState)"
)
FOLLOWER = (
    "[2026-12-05 07:44:53,205] INFO [RaftManager id={id}] Completed transition to FollowerState(fetchTimeoutMs=1000, "
    "epoch={epoch}, leader={leader}, leaderEndpoints=Endpoints(endpoints={{}})) from UnattachedState(epoch=0) (x)"
)


def _cluster(tmp_path: Path) -> ChaosCluster:
    return ChaosCluster(cluster_settings(Settings(), port=19900, kafka_dir=tmp_path), print)


def _log(settings: Settings, node: int, *lines: str) -> None:
    log = broker.paths(broker.nodes(settings)[node - 1].settings).log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("\n".join(lines) + "\n")


def test_the_active_controller_is_the_leader_of_the_highest_epoch(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    with pytest.raises(PipelineError, match=r"no node .* logged an active controller"):
        cluster.controller()
    _log(cluster.settings, 1, LEADER.format(id=1, epoch=1), FOLLOWER.format(id=1, epoch=3, leader=2))
    _log(cluster.settings, 2, FOLLOWER.format(id=2, epoch=1, leader=1), LEADER.format(id=2, epoch=3))
    # Node 3 still says node 1 leads (epoch 1): the later epoch wins.
    _log(cluster.settings, 3, FOLLOWER.format(id=3, epoch=1, leader=1))
    assert cluster.controller() == (2, 3)


def test_the_cluster_scenarios_refuse_the_default_broker_folder() -> None:
    with pytest.raises(ConfigError, match="folder of its own"):
        cluster_settings(Settings(), kafka_dir=Settings().broker.kafka_dir)


def test_event_p99_counts_only_requests_sent_while_the_fault_acted() -> None:
    acked = {f"r{i}": float(i) for i in range(200)}
    arrivals = [Arrival(f"r{i}", "ok", None, i + (5.0 if 50 <= i < 150 else 0.1)) for i in range(200)]
    assert event_p99(acked, arrivals, 50.0, 149.0) == pytest.approx(5000.0)
    assert event_p99(acked, arrivals, 150.0, 199.0) == pytest.approx(100.0)
    assert event_p99(acked, arrivals, 500.0, 600.0) is None
