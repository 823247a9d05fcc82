"""The answer cache: a repeated request answered from what was replied before, without the model.

generate writes every cacheable reply (``ok``, not cut short, made without
session history) to the compacted ``answer-cache`` topic, keyed by
:func:`cache_key`; filter follows that topic into an :class:`AnswerLru`
(bounded by bytes and age) and answers a request whose key it holds at once,
marked ``"cached": true``. The key hashes the task, the normalised text, the
reply budget and :func:`versions` (the reply model, the retrieval model, the
knowledge bases, faq's scoring settings and the prompt), so a changed model,
knowledge base or scoring never
serves an old answer: its requests simply miss. A request with a ``session``
never uses the cache (filter cannot see the session's history).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from msgspec.structs import replace

from pipeline.errors import DecodeError
from pipeline.messages import Answer, Request, now_ms
from pipeline.records import Hooks, StageContext, compact
from pipeline.settings import ChatSettings, Settings

log = logging.getLogger("pipeline.answer_cache")

CACHED_TASKS = frozenset({"chat"})

_fingerprints: dict[tuple[str, int, float], str] = {}

# The faq scoring settings a grounded reply depends on (besides the models and knowledge bases).
RETRIEVAL_SETTINGS = ("faq_min_score", "faq_answer_weight", "faq_lexical_weight", "faq_title_weight",
                      "faq_unsure_margin", "faq_multilingual_min_score",
                      # and how the reply is grounded in them
                      "chat_grounded", "chat_max_sentences", "chat_copy_bonus", "chat_no_repeat")  # fmt: skip


def fingerprint(path: str | Path) -> str:
    """A content hash of a model file or folder (remembered per path, size and mtime)."""
    if not str(path):
        return "none"  # no such model configured (chat off): not Path("") = the working folder, hashed whole
    root = Path(path)
    if not root.exists():
        return f"name:{path}"
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    stamp = (str(root), sum(p.stat().st_size for p in files), max((p.stat().st_mtime for p in files), default=0.0))
    if stamp not in _fingerprints:
        digest = hashlib.sha256()
        for file in files:
            digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
            with file.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
        _fingerprints[stamp] = digest.hexdigest()[:16]
    return _fingerprints[stamp]


def versions(settings: Settings) -> str:
    """What a cached reply depends on besides the request: models, knowledge base, prompt."""
    from pipeline.stages.generate.prompting import PROMPT_VERSION

    # How entries are chosen decides what the reply is grounded on.
    scoring = ",".join(str(settings.value(name)) for name in RETRIEVAL_SETTINGS)
    faq = settings.faq
    return "/".join(
        (fingerprint(settings.chat.chat_model), fingerprint(settings.model_for("chat")), fingerprint(faq.faq_kb),
         fingerprint(faq.faq_multilingual_kb), faq.faq_multilingual_model, scoring, PROMPT_VERSION)
    )  # fmt: skip


def reply_budget(chat: ChatSettings, max_tokens: int | None) -> int:
    """New tokens a reply may have: the request's ``max_tokens``, bounded by the setting."""
    return max(1, min(max_tokens or chat.chat_default_tokens, chat.chat_max_tokens))


def cache_key(task: str, text: str, budget: int, version: str) -> bytes:
    """The answer-cache key of a request (``text`` as filter normalised it; case and spacing ignored)."""
    canonical = " ".join(text.casefold().split())
    return hashlib.sha256(f"{task}\0{budget}\0{version}\0{canonical}".encode()).hexdigest().encode()


class AnswerLru:
    """Cached answers by key, least recently used first out; bounded by total bytes and by age."""

    def __init__(self, max_bytes: int, max_age_ms: float) -> None:
        self.max_bytes = max_bytes
        self.max_age_ms = max_age_ms
        self.entries: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def put(self, key: bytes, value: bytes | None, at_ms: float) -> None:
        """Keep ``value`` (written at ``at_ms``) under ``key``; None removes it (a tombstone)."""
        self._remove(key)
        if value is None or len(value) > self.max_bytes:
            return
        self.entries[key] = (compact(value), at_ms)  # held long: exact size
        self.bytes += len(value)
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self.entries)))

    def get(self, key: bytes, now_ms: float) -> bytes | None:
        """The value under ``key`` if it is younger than the age bound; counts a hit or a miss."""
        found = self.entries.get(key)
        if found is None or now_ms - found[1] > self.max_age_ms:
            if found is not None:
                self._remove(key)
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return found[0]

    def _remove(self, key: bytes) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old[0])

    def __len__(self) -> int:
        return len(self.entries)

    def stats(self) -> str:
        return f"{self.hits} hits, {self.misses} misses, {len(self)} answers, {self.bytes} bytes"


# How often filter logs its cache's hits and misses (when they changed).
STATS_EVERY_MS = 60_000.0


class AnswerCache(Hooks):
    """filter's answer cache: the LRU, fed by following ``answer-cache``, asked for each request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lru = AnswerLru(settings.cache.answer_cache_max_bytes, settings.cache.answer_cache_max_age_ms)
        self.lock = threading.Lock()  # fed by the follower's thread, read by the handler's
        self.version = versions(settings) if settings.cache.answer_cache_max_bytes > 0 else ""
        self.logged = (0, 0)

    def answer(self, request: Request) -> Answer | None:
        """The cached answer to ``request`` (its own id, marked cached), or None."""
        if request.task not in CACHED_TASKS or request.session or not self.version or request.text is None:
            return None
        key = cache_key(request.task, request.text, reply_budget(self.settings.chat, request.max_tokens), self.version)
        with self.lock:
            value = self.lru.get(key, now_ms())
        if value is None:
            return None
        try:
            earlier = Answer.decode(value)
        except DecodeError:
            return None
        return replace(earlier, id=request.id, cached=True, latency_ms={})

    def followed(self, key: bytes, value: bytes | None, timestamp_ms: float) -> None:
        with self.lock:
            self.lru.put(key, value, timestamp_ms)

    def start(self, context: StageContext) -> None:
        context.schedule(STATS_EVERY_MS, self.tick)

    def tick(self, now: float) -> None:
        """Every STATS_EVERY_MS: log the cache's counts when they changed."""
        with self.lock:
            counts = (self.lru.hits, self.lru.misses)
            stats = self.lru.stats()
        if counts != self.logged:
            self.logged = counts
            log.info("answer cache: %s", stats)
