"""A small client: produce requests, await their answers by id (sync and asyncio).

It is a convenience, not a requirement: any Kafka client can produce a request
JSON to ``requests`` and read ``answers`` (see the README's message formats).

Answers are read with plain partition assignment (no consumer group), starting
at the end of ``answers`` as it was when the client started, and matched to
pending requests by id. Every client instance reads every answer, which suits
tools, tests and a handful of front ends; a large fleet of front ends would
give each its own answers topic or filter by a routing header instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.errors import BrokerError, DecodeError, PipelineError
from pipeline.kafka.config import client_producer_config, consumer_config
from pipeline.messages import Answer, Headers, Request, kafka_headers, new_traceparent, now_ms
from pipeline.settings import Settings

log = logging.getLogger("pipeline.client")


class AnswerTimeoutError(PipelineError):
    """No answer arrived in the time the caller was willing to wait."""


class Client:
    """Send requests to the pipeline and wait for their answers."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        client_id = f"{self.settings.prefix}client-{uuid.uuid4().hex[:8]}"
        self.producer = Producer(client_producer_config(self.settings, client_id))
        config = consumer_config(self.settings, f"{client_id}-unused", client_id)
        self.consumer = Consumer(config)
        self.pending: dict[str, Future[Answer]] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self._assign_from_end()
        self.thread = threading.Thread(target=self._read_answers, name="pipeline-client", daemon=True)
        self.thread.start()

    def _assign_from_end(self) -> None:
        topic = self.settings.topic("answers")
        metadata = self.consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise BrokerError(
                f"topic {topic} not found at {self.settings.bootstrap_servers}: run `pipeline topics apply`"
            )
        assignment = []
        for partition in metadata.topics[topic].partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
            assignment.append(TopicPartition(topic, partition, high))
        self.consumer.assign(assignment)

    # -- sending ---------------------------------------------------------------------

    def send(self, request: Request | Mapping[str, Any], *, timeout_ms: int | None = None) -> Future[Answer]:
        """Produce one request; the future resolves with its answer."""
        if not isinstance(request, Request):
            fields = dict(request)
            fields.setdefault("id", uuid.uuid4().hex)
            request = Request(**fields)
        if timeout_ms is not None and request.deadline_ms is None:
            request = replace(request, deadline_ms=int(now_ms() + timeout_ms))
        future = self.watch(request.id)
        headers = kafka_headers(Headers(deadline_ms=request.deadline_ms, traceparent=new_traceparent()).to_list())
        self.producer.produce(
            self.settings.topic("requests"), key=request.id.encode(), value=request.encode(), headers=headers
        )
        self.producer.poll(0)
        return future

    def send_raw(self, request_id: str, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Future[Answer]:
        """Produce arbitrary bytes keyed by ``request_id`` (for bad-input tests and tools)."""
        future = self.watch(request_id)
        self.producer.produce(
            self.settings.topic("requests"), key=request_id.encode(), value=value, headers=kafka_headers(headers or [])
        )
        self.producer.poll(0)
        return future

    def watch(self, request_id: str) -> Future[Answer]:
        """A future for the answer to ``request_id``, sent by someone else."""
        future: Future[Answer] = Future()
        with self.lock:
            self.pending[request_id] = future
        return future

    def ask(self, request: Request | Mapping[str, Any], *, timeout_s: float = 30.0) -> Answer:
        """Send one request and block until its answer comes (or ``timeout_s`` passes)."""
        future = self.send(request, timeout_ms=int(timeout_s * 1000))
        self.producer.flush(timeout_s)
        return self.wait(future, timeout_s)

    async def ask_async(self, request: Request | Mapping[str, Any], *, timeout_s: float = 30.0) -> Answer:
        """The asyncio form of :meth:`ask`."""
        future = self.send(request, timeout_ms=int(timeout_s * 1000))
        await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, timeout_s)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s + 5)

    def wait(self, future: Future[Answer], timeout_s: float) -> Answer:
        try:
            # A little past the deadline: the pipeline answers *at* the deadline.
            return future.result(timeout_s + 5)
        except FutureTimeout as exc:
            raise AnswerTimeoutError(f"no answer within {timeout_s + 5:.0f} s") from exc

    def flush(self, timeout_s: float = 30.0) -> None:
        self.producer.flush(timeout_s)

    # -- receiving -------------------------------------------------------------------

    def _read_answers(self) -> None:
        while not self.closed.is_set():
            message = self.consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            try:
                answer = Answer.decode(message.value())
            except DecodeError:
                log.warning("undecodable answer at %s[%s]@%s", message.topic(), message.partition(), message.offset())
                continue
            hops = Headers.parse(message.headers())
            latency = dict(answer.latency_ms)
            if "merge" in hops.hops or "filter" in hops.hops:
                latency["client"] = round(now_ms() - max(hops.hops.values()), 3)
            answer = replace(answer, latency_ms=latency)
            with self.lock:
                future = self.pending.pop(answer.id, None)
            if future is not None and not future.done():
                future.set_result(answer)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.producer.flush(10)
        self.consumer.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["AnswerTimeoutError", "Client"]
