"""A small client: produce requests, await their answers by id (sync and asyncio).

It is a convenience, not a requirement: any Kafka client can produce a request
JSON to ``requests`` and read ``answers`` (see the README's message formats).

Answers are read with plain partition assignment (no consumer group), starting
at the end of ``answers`` as it was when the client started, and matched to
pending requests by id. :meth:`Client.stream` also reads ``answer-chunks``
the same way and yields a chat reply as it is written (repeated chunks
dropped by ``(id, seq)``), then the final answer. Every client instance reads every answer, which suits
tools, tests and a handful of front ends; a large fleet of front ends would
give each its own answers topic or filter by a routing header instead.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from msgspec.structs import replace

from pipeline.errors import BrokerError, DecodeError, PipelineError
from pipeline.messages import Answer, Chunk, Headers, Reassembly, Request, kafka_headers, new_traceparent, now_ms
from pipeline.runtime.auth import metadata, problems_of, refused
from pipeline.runtime.config import client_producer_config, consumer_config
from pipeline.settings import Settings

log = logging.getLogger("pipeline.client")


class AnswerTimeoutError(PipelineError):
    """No answer arrived in the time the caller was willing to wait."""


class Client:
    """Send requests to the pipeline and wait for their answers."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        client_id = f"{self.settings.kafka.prefix}client-{uuid.uuid4().hex[:8]}"
        config = consumer_config(self.settings, f"{client_id}-unused", client_id)
        self.problems = problems_of(config)
        self.consumer = Consumer(config)
        self.pending: dict[str, Future[Answer]] = {}
        self.streams: dict[str, tuple[Reassembly, queue.Queue[str | Answer]]] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.refusal: BrokerError | None = None  # set when the cluster will not let us read answers
        # First, so that a cluster that refuses us fails here with nothing left open.
        self._assign_from_end()
        self.producer = Producer(client_producer_config(self.settings, client_id))
        self.thread = threading.Thread(target=self._read_answers, name="pipeline-client", daemon=True)
        self.thread.start()

    def _assign_from_end(self) -> None:
        try:
            # Fails fast and says why when the cluster refuses us (a password, TLS, a protocol).
            metadata(self.consumer, self.settings, self.problems, timeout_s=10)
            self._assign_from_end_of_answers()
        except KafkaException as exc:
            self.consumer.close()
            raise refused(self.settings, self.problems, "read the answer topics", exc) from exc
        except BrokerError:
            self.consumer.close()
            raise

    def _assign_from_end_of_answers(self) -> None:
        assignment = []
        for name in ("answers", "answer-chunks"):
            topic = self.settings.topic(name)
            metadata = self.consumer.list_topics(topic, timeout=10)
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                if name != "answers":
                    continue  # a pipeline without chat: no streaming, answers still work
                raise BrokerError(
                    f"topic {topic} not found at {self.settings.kafka.bootstrap_servers}: run `pipeline topics apply`"
                )
            for partition in metadata.topics[topic].partitions:
                tp = TopicPartition(topic, partition)
                _, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                assignment.append(TopicPartition(topic, partition, high))
        self.consumer.assign(assignment)
        self.chunks_topic = self.settings.topic("answer-chunks")

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
            if self.refusal is not None:
                raise self.refusal
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

    def stream(self, request: Request | Mapping[str, Any], *, timeout_s: float = 60.0) -> Iterator[str | Answer]:
        """Send one request; yield its reply's text as it is written, then its :class:`Answer`.

        Repeated chunks (after a crash of the generate member) are dropped; if
        the answer comes before its last chunks, the rest of its reply is
        yielded first, so the yielded text always ends as the answer's reply.
        A request that is not streamed (another task, a cached answer) yields
        its reply (if any) in one piece.
        """
        items, future = self._open_stream(request, timeout_s)
        deadline = time.monotonic() + timeout_s + 5
        try:
            while True:
                try:
                    item = items.get(timeout=max(deadline - time.monotonic(), 0.001))
                except queue.Empty as exc:
                    raise AnswerTimeoutError(f"no answer within {timeout_s + 5:.0f} s") from exc
                yield item
                if isinstance(item, Answer):
                    return
        finally:
            self._close_stream(future)

    async def stream_async(
        self, request: Request | Mapping[str, Any], *, timeout_s: float = 60.0
    ) -> AsyncIterator[str | Answer]:
        """The asyncio form of :meth:`stream`."""
        loop = asyncio.get_running_loop()
        items, future = await loop.run_in_executor(None, self._open_stream, request, timeout_s)
        deadline = time.monotonic() + timeout_s + 5
        try:
            while True:
                remaining = max(deadline - time.monotonic(), 0.001)
                try:
                    item = await loop.run_in_executor(None, items.get, True, remaining)
                except queue.Empty as exc:
                    raise AnswerTimeoutError(f"no answer within {timeout_s + 5:.0f} s") from exc
                yield item
                if isinstance(item, Answer):
                    return
        finally:
            self._close_stream(future)

    def _open_stream(
        self, request: Request | Mapping[str, Any], timeout_s: float
    ) -> tuple[queue.Queue[str | Answer], Future[Answer]]:
        fields = dict(request) if not isinstance(request, Request) else None
        if fields is not None:
            fields.setdefault("id", uuid.uuid4().hex)
            request = Request(**fields)
        assert isinstance(request, Request)
        items: queue.Queue[str | Answer] = queue.Queue()
        reassembly = Reassembly()
        with self.lock:
            self.streams[request.id] = (reassembly, items)
        future = self.send(request, timeout_ms=int(timeout_s * 1000))
        future.add_done_callback(lambda done: self._end_stream(request.id, done))
        self.producer.flush(timeout_s)
        return items, future

    def _end_stream(self, request_id: str, future: Future[Answer]) -> None:
        """The answer came: the rest of its reply (as one delta), then the answer."""
        with self.lock:
            reassembly, items = self.streams.pop(request_id, (Reassembly(), queue.Queue()))
            self.pending.pop(request_id, None)
        if future.cancelled():
            return  # the caller stopped reading
        answer = future.result()
        reply = (answer.result or {}).get("reply")
        if isinstance(reply, str):
            rest = reassembly.rest(reply)
            if rest:
                items.put(rest)
        items.put(answer)

    def _close_stream(self, future: Future[Answer]) -> None:
        if not future.done():
            future.cancel()

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
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    self._denied(error)
                continue
            if message.topic() == self.chunks_topic:
                self._on_chunk(message.value())
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

    def _denied(self, error: KafkaError) -> None:
        """This user may not read the answers: every waiting caller gets the error now, not a timeout."""
        denied = refused(self.settings, None, "read the answer topics", KafkaException(error))
        with self.lock:
            self.refusal = denied
            waiting, self.pending = list(self.pending.values()), {}
        for future in waiting:
            if not future.done():
                future.set_exception(denied)

    def _on_chunk(self, value: bytes | None) -> None:
        try:
            chunk = Chunk.decode(value)
        except DecodeError:
            log.warning("undecodable chunk: %r", (value or b"")[:100])
            return
        with self.lock:
            stream = self.streams.get(chunk.id)
            if stream is None:
                return
            for delta in stream[0].push(chunk):
                stream[1].put(delta)

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
