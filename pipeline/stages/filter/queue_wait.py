"""filter's estimate of the wait ahead of a new request, so it can shed what cannot make its deadline.

Under overload the queues between stages grow; filter answers
``deadline_exceeded`` at once a request whose time left is shorter than the
wait predicted for it, instead of letting it queue through split and infer to
be answered at its deadline (issue 7 point 4). filter sheds only from a
predicted wait of a second, and keeps a margin (``SHED_FROM_MS``,
``SHED_FACTOR`` in ``pipeline.stages.filter.stage``).

**Per partition, the wait of a record appended now.** Once a second
(:class:`pipeline.runtime.queue_age.QueueAges`) filter reads, for every
partition of ``filtered``, ``parts`` and ``results``, the committed offset of
the stage that consumes it, the end offset and how long the record at the
committed offset has waited. From the committed offsets over the last
``RATE_WINDOW_S`` it knows how fast each partition is consumed; a record
appended now waits for the ``lag`` records ahead of it: ``lag / rate``. While
the lag grows (fewer records consumed than produced, as in a partition its
member's fetches starve) it waits at least as long as the head has: in a
growing first-in-first-out queue each record waits longer than the one before
it. A partition with a backlog and no commit for ``STALL_S`` (a stopped
member, one not yet assigned, one starved) is predicted to wait as long again
as its head has already waited: nothing says when it resumes, a guess of
"forever" would shed every request sent there on the first pause, and the
rate from before the stall, spread over the window, would predict minutes for
a member merely paused. Before a rate is known the head's age stands in.

**A rate only from time the partition was busy.** A member consumes no faster
than records arrive: over a window in which its partition sat empty, the
committed offsets say how little came, not how fast it could go. After the
pipeline sat idle, a load's first seconds divided the records in flight by
that diluted rate: "29997 ms left, but it would wait about 24792 ms" at a
quarter of capacity, with a real p99 of 0.86 s (issue 20 point 4). So the
rate's window starts at the last reading in which nothing waited in the
partition (lag 0, or only a transaction marker); a partition emptied less than
``RATE_MIN_SPAN_S`` ago has no rate yet and its head's age stands in. Under
overload a partition is never empty and the window is the whole
``RATE_WINDOW_S``, as before.

**Per request, the partitions it will use.** A request does not wait in the
median partition, nor in the worst: its ``filtered`` record and its results go
to the partition of its id, its parts to the partitions of their keys
(``<id>#<n>``), chosen by the producers' murmur2 partitioner, which filter
computes (:mod:`pipeline.messages.partitioner`). Its predicted wait is the wait
in its ``filtered`` partition, plus the slowest of its parts' partitions (it is
answered only when all its parts are), plus the wait in its ``results``
partition. So a partition that drains slowly sheds only the requests that
would wait in it, and a stopped member sheds only what is sent to its
partitions, once their heads have waited long enough to say so. filter knows
how many parts a request makes only for ``faq`` (one per sentence, as split
cuts it); for other tasks it counts part 0 only, which never overstates the
wait.

A reading older than ``STALE_S`` counts as no prediction (0): filter never
sheds on old news.

**After a gap in the readings, no rate from across it.** When the brokers go
away, filter's readings stop (every call times out) and the members stop
committing with them. The first readings after the brokers return showed the
backlog of the outage over a rate measured across it (a few commits in 15 s),
and predicted 64 s for an infer partition its member drained in seconds:
requests sent to it were shed ``deadline_exceeded`` (the single-broker
broker-restart chaos, 2026-12-05). Readings more than ``GAP_S`` apart start
each partition's history again, and for ``STALL_S`` after that nothing is
predicted (0: filter does not shed on what it cannot know); then the rate
from the fresh readings, or the stall rule, applies as always, with the
head's age counted from the readings' return: nobody could consume while
the brokers were away. A member whose group session ended rejoins seconds
after the brokers return (4 to 10 s on a busy machine): the head's age with
the outage in it stood in as the wait (20.1 s predicted for an infer
partition drained in about 3 s, 8 requests shed), and then its first
commits, over a window that held its absence, gave a rate a tenth of its
real one (47 s predicted, 3.6 s real). So the rate's window also starts
where the member last stood still for ``STALL_S`` with records waiting. Likewise a
partition whose committed offset could not be read (``UNREAD``: right after
a restart the group's coordinator answers "loading"): it used to count as
"nothing committed", the head was read from offset 0, the topic's oldest
record, and its age (54 s) stood in as the wait. The coordinator may also
answer "nothing committed" while it loads; commits never go away, so that
answer for a partition already seen committed counts as not read either.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from pipeline.messages import Request, part_key
from pipeline.messages.partitioner import partition_for
from pipeline.settings import Settings

log = logging.getLogger("pipeline.stages.filter")

EVERY_S = 1.0
STALE_S = 10.0
RATE_WINDOW_S = 10.0  # consume rates over about this long (a member serves partitions in bursts)
RATE_MIN_SPAN_S = 1.5  # a rate needs committed offsets at least this far apart
STALL_S = 3.0  # a backlog and no commit for this long: stalled, whatever the rate before
UNREAD = -2  # a committed offset the probe could not read (the group's coordinator still loading)
GAP_S = 5.0  # readings this far apart: filter was cut off from the brokers (its reads time out after 5 s)
LOG_FROM_S = 1.0  # log the queues when a partition's predicted wait is this long, at most every LOG_EVERY_S
LOG_EVERY_S = 5.0
MAX_PARTS = 16  # a request's parts looked at, at most
DOWNSTREAM = [("split", "filtered"), ("infer", "parts"), ("merge", "results")]


class PartitionQueue(NamedTuple):
    """One partition of a stage's source as read: the stage's committed offset, the end, the head's age (s)."""

    committed: int  # the next offset the stage reads (-1: it has committed nothing; UNREAD: not known)
    end: int
    age: float | None  # seconds the record at ``committed`` has waited; 0: nothing waits; None: not read in time


Reading = dict[str, dict[int, PartitionQueue]]  # stage -> partition -> queue
Probe = Callable[[], Reading]


class Waits:
    """The predicted wait of a record appended now, per stage and partition, from successive readings."""

    def __init__(self) -> None:
        self.history: dict[tuple[str, int], deque[tuple[float, int, int]]] = {}
        self.waits: dict[str, dict[int, float]] = {}
        self.resumed: dict[tuple[str, int], float] = {}  # when readings came back after a gap, per partition
        self.committed_once: set[tuple[str, int]] = set()  # partitions whose stage was seen to have committed

    def update(self, reading: Reading, now: float) -> dict[str, dict[int, float]]:
        waits: dict[str, dict[int, float]] = {}
        for stage, queues in reading.items():
            waits[stage] = {}
            for partition, queue in queues.items():
                key = (stage, partition)
                # Not "from offset 0": that head is the topic's oldest record. A group's commits do not go
                # away, so "nothing committed" after a commit was seen is a reading that failed as well.
                if queue.committed == UNREAD or (queue.committed < 0 and key in self.committed_once):
                    waits[stage][partition] = 0.0
                    continue
                if queue.committed >= 0:
                    self.committed_once.add(key)
                samples = self.history.setdefault(key, deque())
                if samples and now - samples[-1][0] > GAP_S:  # an outage: its rate says nothing of now
                    samples.clear()
                    self.resumed[key] = now
                # Nothing waits (or only a transaction marker): recorded as an empty queue, where
                # partition_wait's rate window starts.
                empty = queue.age == 0.0 or queue.end <= max(queue.committed, 0)
                samples.append((now, queue.committed, max(queue.committed, 0) if empty else queue.end))
                while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
                    samples.popleft()
                since = now - self.resumed[key] if key in self.resumed else None  # readings back after a gap
                blind = since is not None and since < STALL_S
                if since is not None and queue.age is not None and queue.age > since:
                    # Nobody could consume while the brokers were away: the head's wait counts from their return.
                    queue = queue._replace(age=since)
                waits[stage][partition] = 0.0 if blind else partition_wait(queue, samples)
        self.waits = waits
        return waits


Sample = tuple[float, int, int]  # when read, committed offset, end offset


def partition_wait(queue: PartitionQueue, samples: deque[Sample] | list[Sample]) -> float:
    """Seconds a record appended now to this partition waits before its stage reads it (see the module doc)."""
    lag = queue.end - max(queue.committed, 0)
    if lag <= 0 or queue.age == 0.0:
        return 0.0  # nothing waits (or only a transaction marker does)
    # The rate's window starts where the partition was last empty: before that its member could only
    # consume what came, which says nothing about how fast it drains a queue (see the module doc); or
    # where its member last stood still for STALL_S with records waiting: gone (a lost session, a
    # restart), it consumed nothing, which says nothing about how fast it drains once back.
    start = max((i for i, (_, c, e) in enumerate(samples) if e <= max(c, 0)), default=0)
    run_from = 0
    for i in range(1, len(samples)):
        if samples[i][1] != samples[i - 1][1]:
            run_from = i
        elif samples[i][0] - samples[run_from][0] >= STALL_S and samples[i][2] > max(samples[i][1], 0):
            start = max(start, i)
    (t0, c0, e0), (t1, c1, e1) = samples[start], samples[-1]
    span = t1 - t0
    # Since when the committed offset stands where it is now.
    still = next((t for t, c, _ in list(samples)[start:] if c == c1), t1)
    if span >= RATE_MIN_SPAN_S and c1 > c0 and t1 - still < STALL_S:
        wait = lag / ((c1 - c0) / span)
        growing = e1 - max(c1, 0) > e0 - max(c0, 0)
        return max(wait, queue.age or 0.0) if growing else wait
    # No rate yet, or no progress (stalled at least as long as the head waited: assume as long again);
    # a head not read in time says nothing.
    return queue.age or 0.0


def parts_expected(request: Request) -> int:
    """How many parts split will make of ``request``: faq's sentences, else 1 (never more than it makes)."""
    if request.task != "faq" or not request.text:
        return 1
    from pipeline.tasks.sentences import split_sentences

    return max(1, min(MAX_PARTS, len(split_sentences(request.text))))


def request_wait_s(waits: dict[str, dict[int, float]], request: Request) -> float:
    """The wait ahead of ``request``: its filtered partition + its slowest part's partition + its results partition."""
    total = 0.0
    by_id = [request.id.encode()]
    by_part = [part_key(request.id, n).encode() for n in range(parts_expected(request))]
    for stage, partitions in waits.items():
        if not partitions:
            continue
        count = max(partitions) + 1
        keys = by_part if stage == "infer" else by_id
        total += max(partitions.get(partition_for(key, count), 0.0) for key in keys)
    return total


class QueueWait:
    """The predicted waits downstream, refreshed by a background thread started with :meth:`start`."""

    def __init__(self, settings: Settings, probe: Probe | None = None) -> None:
        self.settings = settings
        self.probe = probe
        self.downstream: Sequence[tuple[str, str]] = DOWNSTREAM  # the (stage, source topic) pairs it watches
        # How to open the probe of those queues (returns read, close): the runtime gives it
        # (pipeline.runtime.member), so this stage never imports Kafka.
        self.open_probe: Callable[[], tuple[Probe, Callable[[], None]]] | None = None
        self.model = Waits()
        self.at = 0.0
        self.logged = 0.0
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="filter-queue-wait", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def watch(self, open_probe: Callable[[], tuple[Probe, Callable[[], None]]]) -> None:
        """Once, before the member joins its group: how to open the probe of the queues downstream."""
        self.open_probe = open_probe

    def wait_ms(self, request: Request) -> float:
        """The wait predicted for ``request`` in ms (0 when there is no prediction or it is stale)."""
        if time.monotonic() - self.at > STALE_S:
            return 0.0
        return request_wait_s(self.model.waits, request) * 1000

    def update(self, reading: Reading) -> None:
        now = time.monotonic()
        waits = self.model.update(reading, now)
        self.at = now
        worst = max((max(w.values()) for w in waits.values() if w), default=0.0)
        if worst >= LOG_FROM_S and now - self.logged >= LOG_EVERY_S:
            self.logged = now
            log.info(
                "queues after filter: predicted wait per partition (median/max s; lag) %s",
                ", ".join(
                    f"{stage} {statistics.median_low(w.values()):.1f}/{max(w.values()):.1f};"
                    f" {sum(q.end - max(q.committed, 0) for q in reading[stage].values())}"
                    for stage, w in waits.items() if w
                ),
            )  # fmt: skip

    def _run(self) -> None:
        probe = self.probe
        closer = None
        if probe is None:
            if self.open_probe is None:  # nothing to read the queues with: no prediction, never shed
                return
            probe, closer = self.open_probe()
        try:
            while not self.stopped.is_set():
                try:
                    self.update(probe())
                except Exception as exc:  # a broker hiccup only means no prediction for a while
                    log.debug("queue wait not read: %s", exc)
                self.stopped.wait(EVERY_S)
        finally:
            if closer is not None:
                closer()
