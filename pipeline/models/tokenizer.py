"""Tokenizers for split (and for faq's knowledge base in infer).

Only fast (Rust) tokenizers: QA needs the character offsets of every token to
map an answer span back into the original context, and only they give them.
The tokenizer is loaded from the model directory or from an export's cache
entry, which holds a copy of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Tokenizer: TypeAlias = "PreTrainedTokenizerBase"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The fast tokenizer saved at ``path`` (a model or export directory, or a hub id)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError, ...
        raise ConfigError(f"cannot load a tokenizer: {exc}", where=str(path)) from exc
    if not tokenizer.is_fast:
        raise ConfigError(f"{type(tokenizer).__name__} is not a fast tokenizer; offsets need one", where=str(path))
    return tokenizer


def model_max_length(tokenizer: Tokenizer, default: int = 512) -> int:
    """The tokenizer's input limit, or ``default`` when it sets none (a huge sentinel)."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    return limit if 0 < limit < 1_000_000 else default
