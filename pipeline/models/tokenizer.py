"""Tokenizers for split (and for faq's knowledge base in infer).

Only fast (Rust) tokenizers: QA needs the character offsets of every token to
map an answer span back into the original context, and only they give them.
The tokenizer is loaded from the model directory or from an export's cache
entry, which holds a copy of it.

A folder with a ``tokenizer.json`` is loaded with the ``tokenizers`` library
directly (:class:`FastTokenizer`), not through transformers: importing
transformers pulls in torch and took 2-3 s of a split or infer member's
start, and a member killed and restarted must be processing again within 3 s
(issue 7). :class:`FastTokenizer` answers the calls the tasks make exactly as
transformers' fast tokenizer does (same Rust tokenizer, same truncation,
overflow and offsets; ``tests/unit/test_fast_tokenizer.py`` compares them).
Anything else (a hub id, a folder without ``tokenizer.json``) still goes
through transformers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from tokenizers import Encoding
    from tokenizers import Tokenizer as RustTokenizer
    from transformers import PreTrainedTokenizerBase

Tokenizer: TypeAlias = "PreTrainedTokenizerBase | FastTokenizer | LazyTokenizer"

# transformers' default model inputs, and the tokenizer classes that leave out token_type_ids.
DEFAULT_INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
NO_TYPE_IDS = frozenset(
    {"DistilBertTokenizer", "RobertaTokenizer", "XLMRobertaTokenizer", "CamembertTokenizer", "GPT2Tokenizer",
     "BartTokenizer", "LongformerTokenizer", "MPNetTokenizer", "T5Tokenizer", "LlamaTokenizer"}
)  # fmt: skip


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The fast tokenizer saved at ``path`` (a model or export directory, or a hub id)."""
    folder = Path(path)
    if (folder / "tokenizer.json").is_file():
        return FastTokenizer.load(folder)
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


class Encoded(dict[str, Any]):
    """What a call returns: transformers' ``BatchEncoding`` keys, plus ``sequence_ids(row)``."""

    def __init__(self, data: dict[str, Any], encodings: list[Encoding]) -> None:
        super().__init__(data)
        self.encodings = encodings

    def sequence_ids(self, row: int = 0) -> list[int | None]:
        return list(self.encodings[row].sequence_ids)


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` called like transformers' fast tokenizer, for the calls the tasks make.

    Supported: one text, a text pair or a list of texts; ``add_special_tokens``;
    ``truncation`` (True / ``"longest_first"`` / ``"only_first"`` /
    ``"only_second"``) with ``max_length`` and ``stride``;
    ``return_overflowing_tokens`` (rows: the encoding, then its overflow, as
    transformers orders them) and ``return_offsets_mapping``. No padding:
    infer pads. Calls are serialised because truncation is set on the shared
    Rust tokenizer.
    """

    is_fast = True

    def __init__(self, backend: RustTokenizer, config: dict[str, Any]) -> None:
        self.backend = backend
        self.backend.no_padding()
        self.model_max_length = int(config.get("model_max_length") or 0) or 1_000_000_000
        self.truncation_side = str(config.get("truncation_side") or "right")
        self.padding_side = str(config.get("padding_side") or "right")
        self.pad_type_id = int(config.get("pad_token_type_id") or 0)
        names = config.get("model_input_names")
        if not isinstance(names, list):
            names = [
                n
                for n in DEFAULT_INPUT_NAMES
                if n != "token_type_ids" or config.get("tokenizer_class") not in NO_TYPE_IDS
            ]
        self.model_input_names = [str(n) for n in names]
        self.special = {key[: -len("_token")]: value for key, value in config.items()
                        if key.endswith("_token") and isinstance(value, str)}  # fmt: skip
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # cls_token_id, sep_token_id, pad_token_id, ...: from tokenizer_config.json's *_token names.
        if name.endswith("_token_id") and name != "special_token_id" and "special" in self.__dict__:
            token = self.special.get(name[: -len("_token_id")])
            return None if token is None else self.backend.token_to_id(token)
        raise AttributeError(name)

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> Any:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    @classmethod
    def load(cls, folder: Path) -> FastTokenizer:
        from tokenizers import Tokenizer as RustTokenizer

        try:
            backend = RustTokenizer.from_file(str(folder / "tokenizer.json"))
            config_path = folder / "tokenizer_config.json"
            config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ConfigError(f"cannot load a tokenizer: {exc}", where=str(folder)) from exc
        return cls(backend, config if isinstance(config, dict) else {})

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        processor = self.backend.post_processor
        return int(processor.num_special_tokens_to_add(pair)) if processor is not None else 0

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str = False,
        max_length: int | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        return_offsets_mapping: bool = False,
        padding: bool = False,
        return_tensors: str | None = None,
    ) -> Encoded:
        if return_tensors not in (None, "np"):
            raise TypeError(f"return_tensors={return_tensors!r}: only 'np' is supported")
        batched = not isinstance(text, str)
        if batched and text_pair is not None:
            raise TypeError("a list of texts with a text_pair is not supported")
        inputs: list[Any] = list(text) if batched else [text if text_pair is None else (text, text_pair)]
        with self.lock:
            if truncation:
                strategy = "longest_first" if truncation is True else str(truncation)
                self.backend.enable_truncation(
                    max_length or self.model_max_length, stride=stride, strategy=strategy,
                    direction=self.truncation_side,
                )  # fmt: skip
            else:
                self.backend.no_truncation()
            if padding:  # to the longest in the batch, as transformers' padding=True
                pad = self.special.get("pad", "[PAD]")
                self.backend.enable_padding(
                    pad_id=self.backend.token_to_id(pad) or 0, pad_token=pad, pad_type_id=self.pad_type_id,
                    direction=self.padding_side,
                )  # fmt: skip
            try:
                results = self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
            finally:
                self.backend.no_padding()
        rows: list[Encoding] = []
        samples: list[int] = []
        per_input: list[list[Encoding]] = []
        for index, encoding in enumerate(results):
            group = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            per_input.append(group)
            rows.extend(group)
            samples.extend([index] * len(group))
        data: dict[str, Any] = {"input_ids": [e.ids for e in rows]}
        if "token_type_ids" in self.model_input_names:
            data["token_type_ids"] = [e.type_ids for e in rows]
        if "attention_mask" in self.model_input_names:
            data["attention_mask"] = [e.attention_mask for e in rows]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = samples
        elif not batched:  # one input, no overflow: transformers drops the batch axis
            data = {key: value[0] for key, value in data.items()}
        if return_tensors == "np":
            import numpy as np

            data = {key: np.array(value, dtype=np.int64) for key, value in data.items()}
        return Encoded(data, rows)


class LazyTokenizer:
    """A tokenizer loaded on first use: infer needs one only to embed a knowledge base not yet cached.

    Loading the multilingual tokenizer takes about half a second here, time a
    restarted infer member does not have (issue 7); with the KB embeddings in
    the cache (``pipeline.models.embed_cache``) it is never used.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.loaded: Tokenizer | None = None
        self.lock = threading.Lock()

    def get(self) -> Tokenizer:
        with self.lock:
            if self.loaded is None:
                self.loaded = load_tokenizer(self.path)
            return self.loaded

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.get()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("path", "loaded", "lock"):  # not set yet (during __init__ or unpickling)
            raise AttributeError(name)
        return getattr(self.get(), name)
