"""A member's standing with its brokers and its group: outages it must answer, a session it must get back.

* **An outage.** Every client carries an ``error_cb``
  (:class:`~pipeline.runtime.auth.ConnectionProblems`), so librdkafka hands
  "all brokers down" to it, never to ``poll``. The loop asks after each poll
  whether the consumer's count grew: after an outage the transactional
  producer is made anew, even where the group session survived it. The old
  one's first send offsets after a broker restart shorter than the session
  blocked past its timeout (CI, 2026-12-05: 12 s in filter, split, then
  infer and merge, one after another).
* **A lost session.** librdkafka does not always rejoin by itself after a
  broker restart with static membership (librdkafka #3437): one consumer
  sent the coordinator nothing for 20 s, until the broker expired it. A
  member not back in its group ``REJOIN_AFTER_BACK_S`` after the brokers
  answer again, or ``REJOIN_TIMEOUT_S`` after the loss, exits so a new
  process joins. Whether they answer is asked once a second, bounded: a
  member that lost its session holds no partition and has nothing else to do.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException

from pipeline.errors import BrokerError
from pipeline.runtime.auth import ConnectionProblems

REJOIN_TIMEOUT_S = 20.0
# Members that rejoin do so 2 to 5 s after the brokers are back (the
# coordinator's loading included, on a busy machine).
REJOIN_AFTER_BACK_S = 8.0
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 0.5


class GroupSession:
    """What the loop of one member knows of its connection and its group session."""

    def __init__(self, stage: str, problems: ConnectionProblems | None) -> None:
        self.stage = stage
        self.problems = problems  # the consumer's error_cb; None for clients without one (tests)
        self.outages = 0  # its count of "all brokers down" already answered
        self.lost_at: float | None = None  # when the session ended, until the next assignment
        self.back_at: float | None = None  # while lost: since when the brokers answer again
        self.probed_at = 0.0

    def outage(self) -> bool:
        """Whether every broker was out of reach since the last call (once per outage)."""
        if self.problems is None or self.problems.all_down == self.outages:
            return False
        self.outages = self.problems.all_down
        return True

    def lost(self) -> None:
        self.lost_at, self.back_at = time.monotonic(), None

    def assigned(self) -> None:
        self.lost_at = self.back_at = None

    def check(self, consumer: Any, topic: str) -> None:
        """While lost: raise :class:`BrokerError` (the member exits) once it has waited too long to rejoin."""
        if self.lost_at is None:
            return
        now = time.monotonic()
        if now - self.probed_at >= PROBE_EVERY_S:
            self.probed_at = now
            try:
                consumer.list_topics(topic, timeout=PROBE_TIMEOUT_S)
                self.back_at = self.back_at or now
            except KafkaException:
                self.back_at = None
        if now - self.lost_at > REJOIN_TIMEOUT_S or (self.back_at and now - self.back_at > REJOIN_AFTER_BACK_S):
            raise BrokerError(
                f"{self.stage}: lost its partitions {now - self.lost_at:.0f} s ago and has not rejoined its group "
                f"({'the brokers answer again' if self.back_at else 'the brokers are out of reach'}); "
                "exiting so a new process joins"
            )
