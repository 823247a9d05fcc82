"""``PIPELINE_*`` variables and the values they hold: parsed into a field's type, rendered back, checked.

:class:`~pipeline.settings.Settings` declares the fields (with their defaults
and reasons); this module is how a variable's text becomes a field's value
(:func:`read_env`), how a value is written for a child process's environment
(:func:`render`), and the rules a set of values must keep (:func:`check_values`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:  # only for the signature: settings.py imports this module
    from pipeline.settings import Settings

ENV_PREFIX = "PIPELINE_"

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def read_env(env: Mapping[str, str], kinds: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the ``PIPELINE_<FIELD>`` variables in ``env``, each parsed as its field's type (``kinds``).

    An unknown ``PIPELINE_*`` variable is an error: a typo must not be silently ignored.
    """
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in kinds:
            raise ConfigError(f"unknown setting {key}; known: {', '.join(sorted(kinds))}")
        values[name] = parse(name, raw, kinds[name])
    return values


def render(value: Any) -> str:
    """A field's value as its variable holds it (what :func:`parse` reads back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse(name: str, raw: str, kind: Any) -> Any:
    """The text of ``PIPELINE_<NAME>`` as a value of ``kind`` (int, float, bool, Path or str)."""
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind is Path:
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"PIPELINE_{name.upper()}={raw!r} is not a valid {kind.__name__}") from exc


COMPRESSIONS = ("none", "lz4", "zstd", "snappy", "gzip")
"""librdkafka's compression.type values."""

GROUP_PROTOCOLS = ("classic", "consumer")
"""librdkafka's group.protocol: the join/sync protocol, or KIP-848's broker-driven one."""


def check_values(s: Settings) -> None:
    """Reject values and combinations that cannot work, naming the variable to fix.

    The processing guarantee's type is checked by ``Settings.check`` itself, beside
    :class:`~pipeline.settings.Guarantee`.
    """
    if s.split.qa_stride >= s.split.qa_max_length:
        raise ConfigError("PIPELINE_QA_STRIDE must be smaller than PIPELINE_QA_MAX_LENGTH")
    if s.liveness.stall_timeout_s * 1000 >= s.runtime.max_poll_interval_ms:
        raise ConfigError(
            "PIPELINE_STALL_TIMEOUT_S must be below PIPELINE_MAX_POLL_INTERVAL_MS: a stalled member should "
            "restart before the group throws it out"
        )
    if s.security.security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"PIPELINE_SECURITY_PROTOCOL={s.security.security_protocol!r}: use one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    if s.security.sasl_mechanism not in SASL_MECHANISMS:
        raise ConfigError(
            f"PIPELINE_SASL_MECHANISM={s.security.sasl_mechanism!r}: use one of {', '.join(SASL_MECHANISMS)}"
        )
    if s.runtime.group_protocol not in GROUP_PROTOCOLS:
        raise ConfigError(
            f"PIPELINE_GROUP_PROTOCOL={s.runtime.group_protocol!r}: use one of {', '.join(GROUP_PROTOCOLS)}"
        )
    if s.runtime.compression not in COMPRESSIONS:
        raise ConfigError(f"PIPELINE_COMPRESSION={s.runtime.compression!r}: use one of {', '.join(COMPRESSIONS)}")
    if s.infer.gpu_mem_limit_mb < 0:
        raise ConfigError("PIPELINE_GPU_MEM_LIMIT_MB must be 0 (no limit) or positive")
    if s.chat.generate_provider.strip().lower() not in ("cpu", "cuda"):
        raise ConfigError(f"PIPELINE_GENERATE_PROVIDER={s.chat.generate_provider!r}: use cpu or cuda")
    positive = {
        "batch_max_parts": s.infer.batch_max_parts, "batch_max_tokens": s.infer.batch_max_tokens,
        "batch_max_running": s.infer.batch_max_running, "max_in_flight": s.runtime.max_in_flight,
        "chunk_tokens": s.split.chunk_tokens,
        "chat_default_tokens": s.chat.chat_default_tokens, "chat_max_tokens": s.chat.chat_max_tokens,
        "generate_max_sequences": s.chat.generate_max_sequences, "generate_max_tokens": s.chat.generate_max_tokens,
        "generate_prefill_tokens": s.chat.generate_prefill_tokens,
    }  # fmt: skip
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"PIPELINE_{name.upper()} must be positive")
