"""What a stage sees and emits, and what it may ask of the loop that runs it.

This is the contract between the Kafka runner (``pipeline.runtime.runner``) and
the stages (``pipeline.stages``); both import it, neither imports the other.
A stage is built from Settings into a :class:`StageLogic`: a plain
:data:`Handler` (records in, outputs out) plus, for a stage that needs more
than that, :class:`Hooks` the loop starts with a :class:`StageContext` (how
to send at once, its state table, a clock to schedule work on) and calls on
assignment and revocation. Tests drive a stage by calling its handler with
Records built by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.errors import ConfigError
from pipeline.messages import HeaderList


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message: where it came from and its raw bytes."""

    topic: str  # the declared topic name (without the cluster prefix)
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: HeaderList = field(default_factory=list)
    timestamp_ms: float | None = None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce: a declared topic name, key, value and headers.

    ``value=None`` is a tombstone (compacted topics); ``partition=None`` lets
    the key choose the partition.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: HeaderList = field(default_factory=list)
    partition: int | None = None


Handler = Callable[[Sequence[Record]], list[Output]]
"""A stage's core as the loop calls it: a batch of records in, outputs out.

The outputs are committed together with the batch's offsets (in one
transaction under exactly-once), so they appear exactly when the batch counts
as done. It runs in a worker thread, off the loop's thread."""

Send = Callable[[Output], None]
"""Produce at once, outside any transaction (merge's ticks, generate's streamed chunks)."""


@dataclass(frozen=True)
class Batching:
    """How a stage groups records for its handler."""

    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_in_flight: int = 256
    # Batches handed to the handler while earlier ones still run (each in its
    # own worker thread); they are committed in order. generate uses it so
    # prompts join the engine's running batch instead of waiting for it.
    max_running: int = 1


def compact(value: bytes) -> bytes:
    """``value`` in an allocation of its own size, for bytes kept long.

    orjson (3.x) hands out its output in the 4 KiB buffer it wrote into: a
    130-byte merge tombstone held 4 KiB, and 44,000 of them (ten minutes at
    74 requests/s) grew merge by 220 MiB in the soak. A copy is exact.
    """
    return bytes(memoryview(value))


class StateTable:
    """A stage's state: a key → bytes table per source partition, written through to a changelog.

    The loop fills a partition's table from the changelog topic before any of
    its records is processed and drops it when the partition goes. A handler
    changes it only with :meth:`put`, which returns the changelog record to add
    to its outputs, so the change commits in the same transaction as the
    answers it caused and the consumed offsets. Plain Python: no Kafka here.
    """

    def __init__(self, changelog: str) -> None:
        self.changelog = changelog  # the declared topic name of the changelog
        self.partitions: dict[int, dict[bytes, bytes]] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions.get(partition, {}).get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> Output:
        """Set (or with None delete) ``key``; the changelog record that makes it durable."""
        table = self.partitions.setdefault(partition, {})
        if value is None:
            table.pop(key, None)
        else:
            table[key] = compact(value)
        return Output(self.changelog, key, value, partition=partition)

    def load(self, partition: int, rows: dict[bytes, bytes]) -> None:
        self.partitions[partition] = rows

    def drop(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def __len__(self) -> int:
        return sum(len(t) for t in self.partitions.values())


Every = Callable[[float], None]  # called with the loop's now, in ms since the epoch


@dataclass(frozen=True)
class StageContext:
    """What the runtime gives a stage once, before the member joins its group."""

    send: Send  # produce at once, outside any transaction; safe from the handler's thread
    state: StateTable | None  # the stage's table, named after its changelog in the map (pipeline.flow)
    schedule: Callable[[float, Every], None]  # schedule(every_ms, fn): fn(now_ms) on the loop's thread, every every_ms


class Hooks:
    """What a stage may need from the loop beyond its handler; the defaults do nothing.

    All run on the loop's thread, while a batch may be in the handler on the
    worker thread: what they share with the handler must be safe for that.
    ``assigned`` runs after the partitions' state is restored and before any
    of their records is handled; ``revoked`` after the batch running then is
    committed, so state and committed offsets agree. Work that recurs (a
    stage's timers, expiry scans) is given to ``context.schedule`` at start:
    the runtime owns the clock.
    """

    def start(self, context: StageContext) -> None:
        """Once, before the member joins its group."""

    def assigned(self, partitions: list[int]) -> None:
        """Partitions of the source topic now ours, their state (if any) restored."""

    def revoked(self, partitions: list[int]) -> None:
        """Partitions no longer ours (their state is dropped after this)."""

    def followed(self, key: bytes, value: bytes | None, timestamp_ms: float) -> None:
        """A record of the topic the stage follows (``Stage.follows``), on the follower's own thread."""


class StatefulHooks(Hooks):
    """Hooks of a stage with a state table: they keep the context's ``send`` and the table the runtime restores."""

    send: Send | None = None  # until start
    table: StateTable  # from start: the runtime's, named from the map

    def start(self, context: StageContext) -> None:
        if context.state is None:
            raise ConfigError(f"{type(self).__name__} keeps state: give its stage a changelog in pipeline/flow.py")
        self.send = context.send
        self.table = context.state


class Watcher(Protocol):
    """A stage that watches the queues of later stages (filter's shedding model).

    The runtime opens the probe (it speaks Kafka; the stage does not): it calls
    :meth:`watch` once, before the member joins its group, with a function
    that opens a probe of ``downstream`` and returns its read and close.
    """

    downstream: Sequence[tuple[str, str]]  # (stage, source topic) pairs

    def watch(self, open_probe: Callable[[], tuple[Callable[[], Any], Callable[[], None]]]) -> None: ...


@dataclass(frozen=True)
class StageLogic:
    """A stage as built from Settings: its handler and, if it needs them, its hooks and its watcher."""

    handler: Handler
    hooks: Hooks = field(default_factory=Hooks)
    watcher: Watcher | None = None
