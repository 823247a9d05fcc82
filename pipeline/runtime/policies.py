"""The runner's three decisions, as small pure objects: no consumer, no clock of their own.

* :class:`BatchReadiness`: is there a batch to hand the handler now, and how big?
* :class:`CommitOrder`: which finished batch may be committed next?
* :class:`BackPressure`: which partitions to pause and which to resume?

and :class:`Timers`, the clock a stage schedules its recurring work on.

:class:`~pipeline.runtime.runner.StageRunner` asks them every turn with what
it holds; ``tests/unit/test_runner_policies.py`` asks them directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.records import Batching, Every

Place = tuple[str | None, int | None]  # (topic, partition) of a record


@dataclass(frozen=True)
class BatchReadiness:
    """Records wait at most ``max_wait_ms`` to be batched with others, at most ``max_batch`` to a batch.

    ``max_running`` bounds the batches in the handler; with ``overlap`` (commit
    overlap), a batch that finished and waits for its commit does not count
    (at most one such: the commit follows in the same turn).
    """

    batching: Batching
    overlap: bool = False

    def take(self, buffered: int, oldest_ms: float | None, now_ms: float, computing: int, running: int) -> int:
        """How many buffered records to hand over now (0: none yet).

        ``oldest_ms`` is the timestamp of the oldest buffered record (None or
        not positive when unknown: it then counts as waited long enough),
        ``computing`` the batches whose handler has not returned, ``running``
        all batches not yet committed.
        """
        if not buffered:
            return 0
        busy = computing if self.overlap else running
        if busy >= self.batching.max_running or running > self.batching.max_running:
            return 0
        waited_ms = now_ms - oldest_ms if self.batching.max_wait_ms and oldest_ms and oldest_ms > 0 else float("inf")
        if buffered < self.batching.max_batch and waited_ms < self.batching.max_wait_ms:
            return 0
        return min(self.batching.max_batch, buffered)


class CommitOrder:
    """A partition's offsets only ever move forward over records that are done.

    Batches are kept oldest first. Waiting (shutdown, revocation), the oldest
    is next. Otherwise a finished batch is next unless an older batch still
    running holds a record of one of its partitions.
    """

    @staticmethod
    def next_ready(batches: Sequence[tuple[frozenset[Place], bool]], wait: bool) -> int | None:
        """The index of the batch to commit next in ``batches`` (its places, whether it is done), or None."""
        if not batches:
            return None
        if wait:
            return 0
        busy: set[Place] = set()
        for index, (places, done) in enumerate(batches):
            if done and not places & busy:
                return index
            busy |= places
        return None

    @staticmethod
    def next_offsets(records: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
        """The offsets to commit after ``records`` (topic, partition, offset): one past each partition's highest."""
        highest: dict[tuple[str, int], int] = {}
        for topic, partition, offset in records:
            highest[(topic, partition)] = max(highest.get((topic, partition), -1), offset)
        return {place: offset + 1 for place, offset in highest.items()}

    @staticmethod
    def first_offsets(records: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
        """Where to go back to redo ``records``: each partition's lowest offset among them."""
        first: dict[tuple[str, int], int] = {}
        for topic, partition, offset in records:
            first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
        return first


@dataclass(frozen=True)
class BackPressure:
    """At ``limit`` buffered, pause the partitions holding their share of it or more; resume when drained.

    Lag then builds in Kafka, not in memory. Not every partition: librdkafka
    drops a paused partition's prefetched records and, on resume, fetches in
    assignment order, so pausing all of them each time the buffer filled
    starved the partitions late in that order (under overload one waited 40 s
    while the median waited 1-3 s, librdkafka #2177). A partition holding less
    than its share keeps flowing; the buffer stays within about ``limit``
    (each partition up to its share, plus a fetch). A paused partition resumes
    once it holds half its share or less, or all do once the buffer is half
    empty.
    """

    limit: int

    def decide(
        self, held: Iterable[tuple[str, int]], buffered: int, assigned: int, paused: set[tuple[str, int]]
    ) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """``(pause, resume)``: from where each buffered record is (``held``), how many partitions are ours."""
        if buffered < self.limit and not paused:
            return set(), set()
        counts = Counter(held)
        share = max(1, self.limit // max(1, assigned))
        resume = set(paused) if buffered <= self.limit // 2 else {tp for tp in paused if counts[tp] <= share // 2}
        pause = {tp for tp, n in counts.items() if n >= share} - paused if buffered >= self.limit else set()
        return pause, resume


class Timers:
    """The stage's recurring work (``StageContext.schedule``), run by the loop when it falls due.

    Each function runs on the first turn after it is scheduled, then again on
    the first turn at least ``every_ms`` after its last run.
    """

    def __init__(self) -> None:
        self.timers: list[tuple[float, Every]] = []
        self.due: list[float] = []

    def schedule(self, every_ms: float, fn: Every) -> None:
        self.timers.append((every_ms, fn))
        self.due.append(0.0)

    def run(self, now_ms: float) -> None:
        """Every function that is due, with ``now_ms``."""
        for index, (every_ms, fn) in enumerate(self.timers):
            if now_ms >= self.due[index]:
                self.due[index] = now_ms + every_ms
                fn(now_ms)
