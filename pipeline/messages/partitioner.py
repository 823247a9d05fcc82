"""Which partition a keyed record lands on: Kafka's murmur2 partitioner, in Python.

The stage producers use librdkafka's ``murmur2_random`` partitioner
(``pipeline.runtime.config``), which for a keyed record is the Java client's
default: ``(murmur2(key) & 0x7fffffff) % partitions``. filter uses it to know
which partitions of ``filtered``, ``parts`` and ``results`` a request will
wait in, before anything is produced (``pipeline.stages.filter.queue_wait``). Pure
Python, no client needed.
"""

from __future__ import annotations

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` as an unsigned 32-bit value."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a record with ``key`` goes to among ``partitions`` (librdkafka's murmur2_random)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
