"""The stage runner's loop with in-memory Kafka clients: the paths that otherwise need a broker to show.

Each test steps the loop with ``runner.turn()`` until a condition holds (or
fails after a bounded number of turns).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from confluent_kafka import KafkaError

from pipeline.records import Batching, Hooks, Output, Record, StageContext, StageLogic
from pipeline.runtime.auth import ConnectionProblems
from pipeline.runtime.clients import Clients
from pipeline.runtime.runner import StageRunner
from pipeline.settings import Settings
from tests.unit.fake_kafka import fake_clients

SETTINGS = Settings.of(prefix="", member="0")


def copy_handler(seen: list[bytes]) -> Callable[[Sequence[Record]], list[Output]]:
    def handler(records: Sequence[Record]) -> list[Output]:
        seen.extend(r.key or b"" for r in records)
        return [Output("out", r.key, r.value) for r in records]

    return handler


def held_runner(clients: Clients) -> tuple[StageRunner, threading.Event, list[bytes]]:
    """A runner whose handler holds each batch until the event is set (so its buffer fills); what it saw."""
    release = threading.Event()
    seen: list[bytes] = []

    def held(records: Sequence[Record]) -> list[Output]:
        release.wait(10)
        return copy_handler(seen)(records)

    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(held), Batching(max_batch=2, max_in_flight=4),
                         clients=clients)  # fmt: skip
    return runner, release, seen


def turn_until(runner: StageRunner, done: Callable[[], bool], turns: int = 2000) -> None:
    if not runner.consumer.callbacks:
        runner.join()
    for _ in range(turns):
        runner.turn()
        if done():
            return
        time.sleep(0.001)
    raise AssertionError("condition not reached")


def test_an_aborted_transaction_rewinds_and_the_batch_is_redone_once() -> None:
    clients, consumer, producer = fake_clients("in")
    for i in range(3):
        consumer.add(0, f"k{i}".encode(), b"v")
    consumer.rebalance("assign", [0])
    producer.fail_commits = 1
    seen: list[bytes] = []
    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(copy_handler(seen)), Batching(max_batch=10),
                         clients=clients)  # fmt: skip
    turn_until(runner, lambda: consumer.committed.get(0) == 3)
    assert producer.aborts == 1
    assert seen == [b"k0", b"k1", b"k2", b"k0", b"k1", b"k2"], "handled, aborted, then handled again"
    assert [key for _, key, _, _ in producer.committed] == [b"k0", b"k1", b"k2"], "each output committed once"


def test_a_write_an_acl_refuses_ends_the_member_instead_of_redoing_the_batch() -> None:
    """Refused in a transaction or by the side producer: an AuthorizationError naming the user and the topic."""
    from pipeline.errors import AuthorizationError

    settings = SETTINGS.replace(security_protocol="SASL_SSL", sasl_username="p-stage")
    clients, consumer, producer = fake_clients("in")
    producer.refused = {"out"}
    consumer.add(0, b"k0", b"v")
    consumer.rebalance("assign", [0])
    seen: list[bytes] = []
    runner = StageRunner(settings, "stage", "in", StageLogic(copy_handler(seen)), Batching(), clients=clients)
    with pytest.raises(AuthorizationError, match=r"stage: Kafka refused user 'p-stage' to write out: .*authorization"):
        turn_until(runner, lambda: False)
    assert seen == [b"k0"] and producer.aborts == 0, "not aborted and redone"
    assert consumer.committed.get(0) is None, "its offsets are not committed: the next member redoes it"
    # A refused send outside the transaction (a streamed chunk) ends it at the next turn too.
    clients, consumer, _ = fake_clients("in")
    side = clients.side()
    side.refused = {"chunks"}
    runner = StageRunner(settings, "stage", "in", StageLogic(copy_handler([])), Batching(), clients=clients)
    runner.join()
    runner.send(Output("chunks", b"k", b"v"))
    with pytest.raises(AuthorizationError, match="to write chunks"):
        runner.turn()
    # Refused in produce() itself: the same error, the topic named.
    clients, consumer, producer = fake_clients("in")
    producer.refused_now = {"out"}
    consumer.add(0, b"k0", b"v")
    consumer.rebalance("assign", [0])
    runner = StageRunner(settings, "stage", "in", StageLogic(copy_handler([])), Batching(), clients=clients)
    with pytest.raises(AuthorizationError, match="refused user 'p-stage' to write out: Unable to produce"):
        turn_until(runner, lambda: False)


def test_a_transaction_refused_a_topic_names_it_from_librdkafkas_log(caplog: pytest.LogCaptureFixture) -> None:
    """AddPartitionsToTxn refused: the commit's error names no topic, librdkafka's ADDPARTS line does."""
    import logging

    from confluent_kafka import KafkaError, KafkaException

    from pipeline.errors import AuthorizationError

    caplog.set_level(logging.WARNING, logger="librdkafka")
    clients, consumer, producer = fake_clients("in")
    consumer.add(0, b"k0", b"v")
    consumer.rebalance("assign", [0])

    def refused(timeout: float) -> None:
        line = 'TxnCoordinator/1: Failed to add partition "p-out" [0] to transaction: Broker: Topic authorization '
        line += "failed"
        logging.getLogger("librdkafka").error("%s [%s] %s", "ADDPARTS", "p-stage-0#producer-1", line)
        error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Failed to add partition(s) to transaction",
                           txn_requires_abort=True)  # fmt: skip
        raise KafkaException(error)

    producer.commit_transaction = refused  # type: ignore[method-assign]
    settings = SETTINGS.replace(security_protocol="SASL_SSL", sasl_username="p-stage")
    runner = StageRunner(settings, "stage", "in", StageLogic(copy_handler([])), Batching(), clients=clients)
    with pytest.raises(AuthorizationError, match="refused user 'p-stage' to write p-out: Failed to add partition"):
        turn_until(runner, lambda: False)
    assert producer.aborts == 0


def test_the_consumer_pauses_at_the_in_flight_bound_and_resumes_when_drained() -> None:
    clients, consumer, _ = fake_clients("in")
    for i in range(20):
        consumer.add(0, f"k{i}".encode(), b"v")
    consumer.rebalance("assign", [0])
    runner, release, seen = held_runner(clients)
    turn_until(runner, lambda: runner.paused)
    for _ in range(20):
        runner.turn()
    assert len(runner.buffer) <= 4 + 2, "holds no more than the bound (plus one fetch)"
    assert consumer.paused == {0}
    release.set()
    turn_until(runner, lambda: consumer.committed.get(0) == 20)
    assert not runner.paused and consumer.paused == set()
    assert len(seen) == 20


def test_a_full_buffer_pauses_only_the_partitions_holding_it_and_the_others_keep_flowing() -> None:
    # librdkafka drops a paused partition's prefetched records and resumes in
    # assignment order: pausing every partition whenever the buffer filled
    # starved the late ones under overload (one waited 40 s, the median 1-3 s).
    clients, consumer, _ = fake_clients("in")
    for i in range(20):
        consumer.add(0, f"a{i}".encode(), b"v")
    consumer.rebalance("assign", [0, 1])
    runner, release, seen = held_runner(clients)
    turn_until(runner, lambda: bool(runner.paused))
    assert consumer.paused == {0}, "only the partition holding the buffer"
    consumer.add(1, b"b0", b"v")
    turn_until(runner, lambda: any(m.key() == b"b0" for m in runner.buffer))
    assert consumer.paused == {0}
    release.set()
    turn_until(runner, lambda: consumer.committed.get(0) == 20 and consumer.committed.get(1) == 1)
    assert not runner.paused and consumer.paused == set()
    assert len(seen) == 21


def test_a_partition_revoked_while_paused_comes_back_flowing() -> None:
    # Seen after a scale-down: librdkafka keeps a revoked partition's pause
    # flag, so a partition taken away under back-pressure came back paused to
    # a member no longer paused, and its records waited for the next rebalance.
    clients, consumer, _ = fake_clients("in")
    for i in range(12):
        consumer.add(0, f"a{i}".encode(), b"v")
        consumer.add(1, f"b{i}".encode(), b"v")
    consumer.rebalance("assign", [0, 1])
    runner, release, seen = held_runner(clients)
    turn_until(runner, lambda: runner.paused)
    consumer.rebalance("revoke", [1])  # a new member takes partition 1 while we are paused
    turn_until(runner, lambda: consumer.assigned == [0])
    release.set()
    turn_until(runner, lambda: consumer.committed.get(0) == 12 and not runner.paused)
    consumer.rebalance("assign", [1])  # the other member leaves: partition 1 comes back
    turn_until(runner, lambda: consumer.committed.get(1) == 12)
    assert sorted(seen) == sorted([f"a{i}".encode() for i in range(12)] + [f"b{i}".encode() for i in range(12)])


def test_a_batch_of_partitions_lost_while_it_ran_is_dropped_not_committed() -> None:
    clients, consumer, producer = fake_clients("in")
    consumer.add(0, b"k0", b"v")
    consumer.rebalance("assign", [0])
    started, release = threading.Event(), threading.Event()

    def blocked(records: Sequence[Record]) -> list[Output]:
        started.set()
        release.wait(10)
        return [Output("out", r.key, r.value) for r in records]

    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(blocked), Batching(max_batch=10), clients=clients)
    turn_until(runner, started.is_set)
    consumer.rebalance("lost", [0])
    threading.Timer(0.05, release.set).start()
    runner.turn()  # delivers the loss: the running batch is awaited and dropped
    for _ in range(10):
        runner.turn()
    assert producer.committed == [] and consumer.committed == {}
    assert not runner.running and not runner.buffer


class Recorder(Hooks):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.table_at_assign: dict[bytes, bytes] = {}
        self.state = None

    def start(self, context: StageContext) -> None:
        self.state = context.state  # type: ignore[assignment]

    def assigned(self, partitions: list[int]) -> None:
        self.calls.append(f"assigned {partitions}")
        self.table_at_assign = dict(self.state.partitions[0])  # type: ignore[attr-defined]


def test_state_is_restored_by_the_loop_before_any_record_of_the_partition_runs() -> None:
    clients, consumer, producer = fake_clients("in", rows={0: {b"k0": b"before"}})
    consumer.add(0, b"k0", b"v")
    consumer.rebalance("assign", [0])
    hooks = Recorder()
    runner: StageRunner

    def handler(records: Sequence[Record]) -> list[Output]:
        hooks.calls.append("handled")
        assert runner.state is not None
        return [runner.state.put(r.partition, r.key or b"", b"after") for r in records]

    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(handler, hooks), Batching(max_batch=10),
                         changelog="stage-state", clients=clients)  # fmt: skip
    real_on_assign = runner._on_assign

    def on_assign(consumer: object, partitions: list[object]) -> None:
        real_on_assign(consumer, partitions)  # type: ignore[arg-type]
        assert clients.restored == [], "restore must not run inside the rebalance callback"  # type: ignore[attr-defined]

    runner._on_assign = on_assign  # type: ignore[method-assign,assignment]
    turn_until(runner, lambda: consumer.committed.get(0) == 1)
    assert clients.restored == [[0]]  # type: ignore[attr-defined]
    assert hooks.calls == ["assigned [0]", "handled"]
    assert hooks.table_at_assign == {b"k0": b"before"}
    assert producer.committed == [("stage-state", b"k0", b"after", 0)], "the change goes to the changelog"
    consumer.rebalance("revoke", [0])
    runner.turn()
    assert runner.state is not None and runner.state.partitions == {}, "a revoked partition's state is dropped"


def test_several_running_batches_commit_per_partition_in_order() -> None:
    """With max_running, a later batch commits first only if no older running batch holds its partition."""
    clients, consumer, producer = fake_clients("in")
    consumer.add(0, b"slow", b"v")
    consumer.rebalance("assign", [0, 1])
    gates = {b"slow": threading.Event(), b"p0-late": threading.Event(), b"p1": threading.Event()}
    started: list[bytes] = []

    def gated(records: Sequence[Record]) -> list[Output]:
        started.extend(r.key or b"" for r in records)
        for record in records:
            gates[record.key or b""].wait(10)
        return [Output("out", r.key, r.value) for r in records]

    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(gated), Batching(max_batch=1, max_running=3),
                         clients=clients)  # fmt: skip
    turn_until(runner, lambda: b"slow" in started)
    consumer.add(0, b"p0-late", b"v")
    consumer.add(1, b"p1", b"v")
    turn_until(runner, lambda: len(started) == 3)  # three batches run at once
    gates[b"p1"].set()
    gates[b"p0-late"].set()
    turn_until(runner, lambda: consumer.committed.get(1) == 1)
    for _ in range(20):
        runner.turn()
    # partition 1 committed past the still-running slow batch; partition 0's later record waits for it
    assert [key for _, key, _, _ in producer.committed] == [b"p1"]
    assert consumer.committed.get(0) is None
    gates[b"slow"].set()
    turn_until(runner, lambda: consumer.committed.get(0) == 2)
    assert [key for _, key, _, _ in producer.committed] == [b"p1", b"slow", b"p0-late"]


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_batch_is_in_the_handler_while_the_previous_one_commits(overlap: bool) -> None:
    """commit_overlap: the model runs during a commit's round trips, not after them; off, one after the other."""
    clients, consumer, producer = fake_clients("in")
    for i in range(3):
        consumer.add(0, f"k{i}".encode(), b"v")
    consumer.rebalance("assign", [0])
    runner = StageRunner(Settings.of(prefix="", member="0", commit_overlap=overlap), "stage", "in",
                         StageLogic(copy_handler([])), Batching(max_batch=1), clients=clients)  # fmt: skip
    in_handler_at_commit: list[list[bytes]] = []
    commit = producer.commit_transaction

    def watched(timeout: float) -> None:
        in_handler_at_commit.append([m.key() for batch, _ in runner.running for m in batch])
        commit(timeout)

    producer.commit_transaction = watched  # type: ignore[method-assign]
    turn_until(runner, lambda: consumer.committed.get(0) == 3)
    assert [key for _, key, _, _ in producer.committed] == [b"k0", b"k1", b"k2"], "committed once, in order"
    # (the committing batch has left runner.running; what is there is the next)
    if overlap:
        assert [b"k2"] in in_handler_at_commit, in_handler_at_commit
    else:
        assert in_handler_at_commit == [[], [], []]


def test_after_the_session_is_lost_the_next_transaction_uses_a_new_producer() -> None:
    clients, consumer, producer = fake_clients("in")
    made = []

    def make() -> object:
        made.append(producer)
        return producer

    clients.producer = make
    consumer.add(0, b"k0", b"v")
    consumer.rebalance("assign", [0])
    seen: list[bytes] = []
    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(copy_handler(seen)), Batching(), clients=clients)
    turn_until(runner, lambda: consumer.committed.get(0) == 1)
    assert len(made) == 1
    consumer.rebalance("lost", [0])
    consumer.rebalance("assign", [0])
    consumer.add(0, b"k1", b"v")
    turn_until(runner, lambda: consumer.committed.get(0) == 2)
    assert len(made) == 2 and len(runner.delivery.retired) == 1, "a lost session renews the transactional producer"


def test_after_every_broker_was_out_of_reach_the_next_transaction_uses_a_new_producer() -> None:
    """A broker restart shorter than the group session: no partition is lost, and only the consumer's error_cb
    says the brokers were gone. The old producer's first send offsets then blocked past its timeout (CI,
    2026-12-05: 12 s in each stage in turn), so the next transaction must start on a new one."""
    clients, consumer, producer = fake_clients("in")
    clients.problems = ConnectionProblems("stage-0")
    made = []

    def make() -> object:
        made.append(producer)
        return producer

    clients.producer = make
    consumer.add(0, b"k0", b"v")
    consumer.rebalance("assign", [0])
    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(copy_handler([])), Batching(), clients=clients)
    turn_until(runner, lambda: consumer.committed.get(0) == 1)
    clients.problems(KafkaError(KafkaError._TRANSPORT, "Disconnected"))  # one connection: not an outage
    consumer.add(0, b"k1", b"v")
    turn_until(runner, lambda: consumer.committed.get(0) == 2)
    assert len(made) == 1, "a dropped connection alone keeps the producer"
    clients.problems(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    consumer.add(0, b"k2", b"v")
    turn_until(runner, lambda: consumer.committed.get(0) == 3)
    assert len(made) == 2 and len(runner.delivery.retired) == 1, "an outage renews the transactional producer"
    consumer.add(0, b"k3", b"v")
    turn_until(runner, lambda: consumer.committed.get(0) == 4)
    assert len(made) == 2, "once per outage"


def test_a_member_that_lost_its_session_and_does_not_rejoin_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import BrokerError
    from pipeline.runtime import session

    monkeypatch.setattr(session, "REJOIN_TIMEOUT_S", 0.05)
    clients, consumer, _ = fake_clients("in")
    consumer.reachable = False  # the brokers away the whole time: only the absolute bound ends it
    consumer.rebalance("assign", [0])
    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(copy_handler([])), Batching(), clients=clients)
    turn_until(runner, lambda: bool(consumer.assigned))
    consumer.rebalance("lost", [0])
    runner.turn()
    time.sleep(0.1)
    with pytest.raises(BrokerError, match="has not rejoined its group \\(the brokers are out of reach\\)"):
        runner.turn()


def test_a_member_not_back_in_its_group_soon_after_the_brokers_answer_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka (#3437) may send the coordinator nothing after a session lost in a broker restart: the broker
    expired the member 10 s after it was back, and the stage waited out the 20 s bound (2026-12-05). Once the
    brokers answer, a member not rejoined within REJOIN_AFTER_BACK_S exits; while they are away, it waits."""
    from pipeline.errors import BrokerError
    from pipeline.runtime import session

    monkeypatch.setattr(session, "REJOIN_AFTER_BACK_S", 0.2)
    clients, consumer, _ = fake_clients("in")
    consumer.rebalance("assign", [0])
    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(copy_handler([])), Batching(), clients=clients)
    turn_until(runner, lambda: bool(consumer.assigned))
    consumer.reachable = False
    consumer.rebalance("lost", [0])
    runner.turn()
    for _ in range(3):  # away: no exit, however long past REJOIN_AFTER_BACK_S
        runner.session.probed_at = 0.0
        runner.turn()
        time.sleep(0.1)
    consumer.reachable = True
    runner.session.probed_at = 0.0
    runner.turn()  # they answer: the clock starts
    time.sleep(0.3)
    with pytest.raises(BrokerError, match="has not rejoined its group \\(the brokers answer again\\)"):
        runner.turn()
    # Rejoined in time: no exit.
    clients, consumer, _ = fake_clients("in")
    consumer.rebalance("assign", [0])
    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(copy_handler([])), Batching(), clients=clients)
    turn_until(runner, lambda: bool(consumer.assigned))
    consumer.rebalance("lost", [0])
    runner.turn()
    consumer.rebalance("assign", [0])
    runner.turn()
    time.sleep(0.3)
    runner.turn()
    assert runner.session.lost_at is None


def test_the_runtime_owns_the_clock_a_stage_schedules_its_recurring_work_on() -> None:
    clients, _, _ = fake_clients("in")
    ran: list[float] = []

    class Scheduling(Hooks):
        def start(self, context: StageContext) -> None:
            assert context.state is not None and context.state.changelog == "stage-state", "named from the map"
            context.schedule(60_000, ran.append)

    runner = StageRunner(SETTINGS, "stage", "in", StageLogic(copy_handler([]), Scheduling()), Batching(),
                         changelog="stage-state", clients=clients)  # fmt: skip
    runner.join()
    runner.turn()
    runner.turn()
    assert len(ran) == 1, "due on the first turn, then not again within its period"
