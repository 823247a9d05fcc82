"""filter's estimate of the wait ahead of a new request, so it can shed what cannot make its deadline.

Under overload the queues between stages grow; a request that enters now
waits about as long as the records at their heads have waited. filter reads
those ages in the background (:class:`pipeline.kafka.queue_age.QueueAges`,
every ``EVERY_S``) and answers ``deadline_exceeded`` at once a request whose
time left is shorter than the predicted wait, instead of letting it queue
through split and infer to be shed there at its deadline (issue 7 point 4).
filter sheds only from a predicted wait of a second, and keeps a margin
(``SHED_FROM_MS``, ``SHED_FACTOR`` in ``pipeline.stages.filter``).

Per stage the prediction is the median head age over the partitions of its
source (0 where nothing waits): a request's parts spread over partitions,
and one stalled partition (a stopped member) must not shed every request.
The stages' medians add up. A reading older than ``STALE_S`` counts as no
prediction (0): filter never sheds on old news.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable

from pipeline.settings import Settings

log = logging.getLogger("pipeline.stages.filter")

EVERY_S = 1.0
STALE_S = 10.0
LOG_FROM_S = 1.0  # log the queues when a head waited this long, at most every LOG_EVERY_S
LOG_EVERY_S = 5.0
DOWNSTREAM = [("split", "filtered"), ("infer", "parts"), ("merge", "results")]

Probe = Callable[[], dict[str, list[float]]]


def predicted_wait_s(ages: dict[str, list[float]]) -> float:
    """The wait ahead of a new request: per stage the median head age, summed."""
    return sum(statistics.median_low(values) for values in ages.values() if values)


class QueueWait:
    """The predicted wait downstream, refreshed by a background thread started with :meth:`start`."""

    def __init__(self, settings: Settings, probe: Probe | None = None) -> None:
        self.settings = settings
        self.probe = probe
        self.wait_s = 0.0
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

    def wait_ms(self) -> float:
        """The current prediction in ms (0 when there is none or it is stale)."""
        if time.monotonic() - self.at > STALE_S:
            return 0.0
        return self.wait_s * 1000

    def update(self, ages: dict[str, list[float]]) -> None:
        self.wait_s = predicted_wait_s(ages)
        self.at = time.monotonic()
        worst = max((max(values) for values in ages.values() if values), default=0.0)
        if worst >= LOG_FROM_S and self.at - self.logged >= LOG_EVERY_S:
            self.logged = self.at
            log.info(
                "queues after filter: predicted wait %.1f s; head ages (median/max s) %s", self.wait_s,
                ", ".join(f"{stage} {statistics.median_low(v):.1f}/{max(v):.1f}" for stage, v in ages.items() if v),
            )  # fmt: skip

    def _run(self) -> None:
        probe = self.probe
        closer = None
        if probe is None:
            from pipeline.kafka.queue_age import QueueAges

            ages = QueueAges(self.settings, DOWNSTREAM)
            probe, closer = ages.read, ages.close
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
