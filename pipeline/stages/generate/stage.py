"""generate: write the reply of each chat prompt with the LLM, streamed, and keep its session.

Every prompt (from merge, keyed by session) becomes a sequence in the
engine's continuous batch (:class:`~pipeline.models.generator.Generator`).
The runner hands prompts over in small batches and keeps several batches
running (``Batching.max_running``), so a prompt that arrives while others are
being written joins them at the engine's next step. A batch is done when its
sequences are; its outputs commit in one transaction:

* the final :class:`~pipeline.messages.Answer` on ``answers`` (the whole
  reply, the entries used, token counts, time to first token, tokens/s);
* the session's new state (``sessions``, via the state table's ``put``);
* the reply on ``answer-cache`` when it may be served again
  (:mod:`pipeline.stages.answer_cache`).

A reply is grounded (``settings.chat.chat_grounded``): its lead, the facts' best
sentence per sub-question, is streamed before the model runs, the engine
decodes with :class:`~pipeline.models.constraints.GroundedDecoding`, and each
sentence the model writes is checked (:mod:`.grounding`) before it streams.

While a reply is written its pieces go out at once as
:class:`~pipeline.messages.Chunk` records on ``answer-chunks`` through the
runner's ``send`` (idempotent, not transactional: a transactional reader would
see them only at the commit). A crash repeats chunks, never answers.

Messages of one session are written one after the other: a follow-up waits
for the reply before it, so its prompt has that turn. A deadline stops the
sequence: the answer is ``partial`` with the text so far. Idle sessions are
deleted by an ``expire`` control record the member sends itself (like merge's
ticks), so the deletion commits like any other change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError, DeadlineExceededError, DecodeError
from pipeline.messages import Answer, Chunk, Control, Headers, Prompt, left_ms, now_ms, passed
from pipeline.models.constraints import Vocabulary
from pipeline.models.generator import Generated, Generator, TextStream
from pipeline.records import Output, Record, StageContext, StageLogic, StatefulHooks
from pipeline.settings import Settings
from pipeline.stages.answer_cache import cache_key, reply_budget, versions
from pipeline.stages.base import BadRecords, answer_output
from pipeline.stages.generate.grounding import CheckedStream
from pipeline.stages.generate.prompting import chat_messages, count_tokens, grounded_plan, grounded_sequence, prompt_ids
from pipeline.stages.generate.sessions import Session, Turn
from pipeline.tasks.faq.task import FALLBACK, FALLBACK_ZH
from pipeline.tasks.language import detect_language

STAGE = "generate"
BAD = BadRecords(STAGE, answers=True)  # a bad request is answered and dead-lettered
TASK = "chat"
# How often idle sessions are looked for, and how long before an expire record is sent again.
EXPIRE_SCAN_MS = 1_000.0
EXPIRE_RESEND_MS = 10_000.0

log = logging.getLogger("pipeline.generate")


class FixedText(TextStream):
    """A reply that was not generated (retrieved text): all of it is there from the start."""

    def __init__(self, text: str) -> None:
        self.text = text

    def finish(self) -> str:
        return ""


@dataclass
class Reply:
    """One prompt being answered: what streaming and the final answer need."""

    prompt: Prompt
    record: Record
    headers: Headers
    history: list[Turn]
    stream: TextStream
    started_ms: float
    checked: CheckedStream | None = None  # grounded replies: the lead, then checked sentences
    first_token_ms: float | None = None
    model_first_ms: float | None = None  # the model's own first token (after the lead, for grounded replies)
    seq: int = 0
    held: str = ""  # text not yet sent: sent when chunk_flush_ms has passed since the last chunk
    sent_ms: float = 0.0
    done: Future[list[Output]] = field(default_factory=Future)


class Generate(StatefulHooks):
    """generate's handler (a batch of prompts in, their committed outputs out) and hooks."""

    def __init__(self, settings: Settings, engine: Generator, tokenizer: Any, version: str) -> None:
        self.settings = settings
        self.engine = engine
        self.tokenizer = tokenizer
        self.version = version
        self.lock = threading.Lock()
        # The reply last started per session: a follow-up waits for it.
        self.tails: dict[bytes, Future[list[Output]]] = {}
        self.last_seen: dict[tuple[int, bytes], float] = {}
        self.expire_sent: dict[tuple[int, bytes], float] = {}
        # Sequences in the engine at once (its continuous batch): the member's bound.
        self.slots = threading.BoundedSemaphore(settings.chat.generate_max_sequences)
        self.languages = {code.strip() for code in settings.chat.chat_languages.split(",") if code.strip()}
        # Grounded decoding needs each token's text (0.1 s for SmolLM2's 49k tokens, once).
        self.vocab = Vocabulary(tokenizer) if settings.chat.chat_grounded else None

    # -- the handler (worker threads; several batches at once) ---------------------------------

    def __call__(self, records: Sequence[Record]) -> list[Output]:
        pending = [self._start(record) for record in records]
        outputs: list[Output] = []
        for item in pending:
            outputs.extend(item.result() if isinstance(item, Future) else item)
        return outputs

    def _start(self, record: Record) -> Future[list[Output]] | list[Output]:
        """Begin one record: an expiry is applied at once; a prompt is queued into the engine."""
        key = record.key or b""
        if Control.of(record.headers) is Control.EXPIRE:
            return self._expire(record.partition, key)
        try:
            prompt = Prompt.decode(record.value)
        except DecodeError as exc:
            return BAD.outputs(record, exc)
        headers = Headers.parse(record.headers).stamped(STAGE)
        with self.lock:  # messages of one session one after the other
            before = self.tails.get(key)
            mine: Future[list[Output]] = Future()
            self.tails[key] = mine
        mine.add_done_callback(lambda done: self._untail(key, done))
        try:
            if before is not None:
                before.result()  # the earlier reply of this session: its turn is in the table now
            outputs = self._begin(prompt, record, headers, mine)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        if outputs is not None:
            mine.set_result(outputs)
        return mine

    def _untail(self, key: bytes, done: Future[list[Output]]) -> None:
        with self.lock:
            if self.tails.get(key) is done:
                del self.tails[key]

    def _begin(
        self, prompt: Prompt, record: Record, headers: Headers, done: Future[list[Output]]
    ) -> list[Output] | None:
        session = self._session(record.partition, prompt) if prompt.session else Session()
        if session.answered(prompt.id):
            log.info("request %s was answered already in session %s; skipping", prompt.id, prompt.session)
            return []
        history = session.recent(self.settings.chat.chat_history_tokens)
        language = detect_language(prompt.text)
        if language not in self.languages:
            return self._retrieved_reply(prompt, record, headers, history, session, language)
        plan = grounded_plan(prompt, history) if self.vocab is not None else None
        if plan is not None:
            prompt = plan.prompt  # the entries the reply draws on (a follow-up's earlier ones included)
            if not plan.lead:  # nothing retrieved: no model may answer it
                return self._retrieved_reply(prompt, record, headers, history, session, language)
        reply = Reply(prompt, record, headers, history, TextStream(self.tokenizer), now_ms(), done=done)
        process = None
        if plan is not None and self.vocab is not None:
            # The reply opens with the facts' best sentences, streamed now, before anything waits on the model.
            reply.checked = CheckedStream(plan.grounds, plan.lead, self.settings.chat.chat_max_sentences)
            reply.first_token_ms = now_ms()
            self._chunk(reply, plan.lead)
            ids, process = grounded_sequence(plan, self.tokenizer, self.vocab, self.settings, history)
        else:
            ids = prompt_ids(self.tokenizer, chat_messages(prompt, history))
        left = left_ms(headers.deadline_ms)
        wait_s = None if left is None else left / 1000
        if (wait_s is not None and wait_s <= 0) or not self.slots.acquire(timeout=wait_s):
            if reply.checked is not None:  # its lead went out: the answer carries it, cut short (partial)
                return self._outputs(reply, session, Generated([], "stopped", len(ids)))
            error = DeadlineExceededError("the deadline passed before generation started", request_id=prompt.id)
            answer = Answer.failure(prompt.id, error.code, error.message, task=TASK)
            return [answer_output(answer, headers)]
        budget = reply_budget(self.settings.chat, prompt.max_tokens)
        try:
            future = self.engine.submit(ids, budget, lambda token: self._on_token(reply, token), headers.deadline_ms,
                                        process)  # fmt: skip
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda f: self._finished(reply, session, f))
        return None

    def _retrieved_reply(self, prompt: Prompt, record: Record, headers: Headers, history: list[Turn],
                         session: Session, language: str) -> list[Output]:  # fmt: skip
        """A message in a language the model does not write: the retrieved entries' answers are the reply.

        Streamed as one chunk and committed like a generated reply (session turn
        included), with ``"generated": false`` and the language in the result.
        """
        text = "\n\n".join(dict.fromkeys(str(e.get("answer", "")) for e in prompt.entries if e.get("matched")))
        if not text:
            text = (FALLBACK_ZH if language == "zh" else FALLBACK).format(question=prompt.text)
        reply = Reply(prompt, record, headers, history, FixedText(text), now_ms())
        reply.first_token_ms = now_ms()
        self._chunk(reply, text)
        return self._outputs(reply, session, Generated(tokens=[], prompt_tokens=0, stopped="retrieved"))

    def _on_token(self, reply: Reply, token: int) -> bool:
        """Engine thread: stream the token's text; False (stop) once the deadline has passed."""
        now = now_ms()
        if reply.first_token_ms is None:
            reply.first_token_ms = now
        if reply.model_first_ms is None:
            reply.model_first_ms = now
        in_time = not passed(reply.headers.deadline_ms, now)
        if reply.checked is not None:  # whole sentences, each checked, go out as they pass
            released, go_on = reply.checked.push(reply.stream.push(token))
            if released:
                self._chunk(reply, released)
            return go_on and in_time
        reply.held += reply.stream.push(token)
        # The first piece goes at once (time to first token); later ones are
        # gathered for chunk_flush_ms: fewer records, the same text.
        if reply.held and (reply.seq == 0 or now - reply.sent_ms >= self.settings.chat.chunk_flush_ms):
            self._chunk(reply, reply.held)
        return in_time

    def _chunk(self, reply: Reply, delta: str) -> None:
        if self.send is not None:
            chunk = Chunk(reply.prompt.id, reply.seq, delta)
            self.send(Output("answer-chunks", reply.prompt.id.encode(), chunk.encode()))
        reply.seq += 1
        reply.held = ""
        reply.sent_ms = now_ms()

    def _finished(self, reply: Reply, session: Session, future: Future[Generated]) -> None:
        """Engine thread: the sequence ended; build its committed outputs."""
        self.slots.release()
        try:
            reply.done.set_result(self._outputs(reply, session, future.result()))
        except BaseException as exc:  # surfaces in the handler, which ends the member
            log.exception("finishing request %s failed", reply.prompt.id)
            reply.done.set_exception(exc)

    def _outputs(self, reply: Reply, session: Session, generated: Generated) -> list[Output]:
        prompt = reply.prompt
        checked = reply.checked
        if checked is not None:
            ended_by_check = checked.done
            rest = checked.push(reply.stream.finish())[0] + checked.finish(complete=generated.stopped == "eos")
            if ended_by_check and generated.stopped == "stopped":
                generated = Generated(generated.tokens, "checked", generated.prompt_tokens)
        else:
            rest = reply.held + reply.stream.finish()
        if rest:
            self._chunk(reply, rest)
        end = now_ms()
        text = (checked.text if checked is not None else reply.stream.text).strip()
        result = self._result(reply, generated, end)
        if generated.stopped == "stopped" and not generated.tokens and checked is None:
            # The deadline passed while it waited for room in the batch: nothing was written.
            error = DeadlineExceededError("the deadline passed before generation started", request_id=prompt.id)
            return [answer_output(Answer.failure(prompt.id, error.code, error.message, task=TASK), reply.headers)]
        if generated.stopped == "stopped":
            message = f"the deadline passed after {len(generated.tokens)} tokens"
            answer = Answer.failure(prompt.id, "partial", message, task=TASK, result=result)
        else:
            answer = Answer.success(prompt.id, TASK, result)
        outputs = [answer_output(answer, reply.headers)]
        if prompt.session:
            tokens = count_tokens(self.tokenizer, prompt.text) + len(generated.tokens)
            used = [(str(e.get("entry")), str(e.get("answer"))) for e in prompt.entries if e.get("matched")]
            session.add(Turn(prompt.id, prompt.text, text, tokens, used), self.settings.chat.chat_history_tokens, end)
            outputs.append(self._put(reply.record.partition, prompt.session.encode(), session.encode(), end))
        if answer.ok and not reply.history:
            budget = reply_budget(self.settings.chat, prompt.max_tokens)
            key = cache_key(TASK, prompt.text, budget, self.version)
            # Served later to requests without a session: the copy names none (not this customer's).
            shared = {**result, "session": None}
            outputs.append(Output("answer-cache", key, Answer.success(prompt.id, TASK, shared).encode()))
        log.info("answered %s: %s, %d tokens%s", prompt.id, answer.status, len(generated.tokens),
                 f" (session {prompt.session})" if prompt.session else "")  # fmt: skip
        return outputs

    def _result(self, reply: Reply, generated: Generated, end: float) -> dict[str, Any]:
        n = len(generated.tokens)
        first = reply.first_token_ms
        requested = reply.headers.hops.get("requested", reply.started_ms)
        started = reply.model_first_ms  # tokens/s is the model's: from its first token, not the lead's
        decode_s = (end - started) / 1000 if started is not None else 0.0
        checked = reply.checked
        extra: dict[str, Any] = {"grounding": checked.report()} if checked is not None else {}
        return {
            "reply": checked.text if checked is not None else reply.stream.text,  # exactly the chunks joined
            "entries": reply.prompt.entries,
            "session": reply.prompt.session,
            "turns_in_prompt": len(reply.history),
            "tokens": {"prompt": generated.prompt_tokens, "completion": n},
            "stopped": generated.stopped,
            # From when the client sent the request (retrieval included) and from generate's start.
            "first_token_ms": round(first - requested, 1) if first is not None else None,
            "prefill_ms": round(first - reply.started_ms, 1) if first is not None else None,
            "tokens_per_s": round((n - 1) / decode_s, 2) if n > 1 and decode_s > 0 else None,
            "generated": generated.stopped != "retrieved",
            **extra,
        }

    # -- sessions ---------------------------------------------------------------------------

    def _session(self, partition: int, prompt: Prompt) -> Session:
        assert prompt.session is not None
        try:
            return Session.decode(self.table.get(partition, prompt.session.encode()))
        except DecodeError:
            log.warning("session %s is unreadable; starting it afresh", prompt.session)
            return Session()

    def _put(self, partition: int, key: bytes, value: bytes | None, now: float) -> Output:
        with self.lock:
            if value is None:
                self.last_seen.pop((partition, key), None)
            else:
                self.last_seen[(partition, key)] = now
            self.expire_sent.pop((partition, key), None)
        return self.table.put(partition, key, value)

    def _expire(self, partition: int, key: bytes) -> list[Output]:
        with self.lock:
            busy = key in self.tails and not self.tails[key].done()
        value = self.table.get(partition, key)
        if busy or value is None:
            return []
        try:
            session = Session.decode(value)
        except DecodeError:
            session = Session()
        if not session.expired(now_ms(), self.settings.chat.session_ttl_ms):
            return []
        log.info("session %s expired after %.0f s idle", key.decode("utf-8", "replace"),
                 (now_ms() - session.last_ms) / 1000)  # fmt: skip
        return [self._put(partition, key, None, now_ms())]

    # -- hooks (the loop's thread) ------------------------------------------------------------

    def assigned(self, partitions: list[int]) -> None:
        held = 0
        for partition in partitions:
            for key, value in list(self.table.partitions.get(partition, {}).items()):
                try:
                    last = Session.decode(value).last_ms
                except DecodeError:
                    last = 0.0
                with self.lock:
                    self.last_seen[(partition, key)] = last
                held += 1
        log.info("generate holds %d sessions of partitions %s", held, partitions)

    def revoked(self, partitions: list[int]) -> None:
        gone = set(partitions)
        with self.lock:
            for place in [p for p in self.last_seen if p[0] in gone]:
                self.last_seen.pop(place, None)
                self.expire_sent.pop(place, None)

    def start(self, context: StageContext) -> None:
        super().start(context)
        context.schedule(EXPIRE_SCAN_MS, self.tick)

    def tick(self, now: float) -> None:
        """Every EXPIRE_SCAN_MS: expire idle sessions through a control record."""
        assert self.send is not None  # scheduled at start
        ttl = self.settings.chat.session_ttl_ms
        with self.lock:
            due = [
                place for place, last in self.last_seen.items()
                if now - last >= ttl and now - self.expire_sent.get(place, -EXPIRE_RESEND_MS) >= EXPIRE_RESEND_MS
            ]  # fmt: skip
            for place in due:
                self.expire_sent[place] = now
        for partition, key in due:
            self.send(Output("prompts", key, b"{}", [Control.EXPIRE.header()], partition=partition))


def build(settings: Settings) -> StageLogic:
    """Load the reply model into an engine (its thread starts here) and the stage around it."""
    from pipeline.models.generator import load_generator

    if not settings.chat.chat_model:
        raise ConfigError("generate needs a reply model: set PIPELINE_CHAT_MODEL")
    began = time.monotonic()
    engine, tokenizer = load_generator(settings)
    log.info("generate: %s loaded in %.1f s", settings.chat.chat_model, time.monotonic() - began)
    stage = Generate(settings, engine, tokenizer, versions(settings))
    return StageLogic(stage, stage)
