"""An export's weights in a file beside its graph, so ONNX Runtime maps them instead of copying them.

Creating a CPU session from a self-contained ``model.onnx`` copies every
weight into the process: for the multilingual e5 export (470 MB, 384 MB of it
the 250k-row word-embedding table, of which a request touches a few rows)
that took 0.66 s here, mostly system time, and it is the largest part of a
restarted infer member's start (issue 7 point 2). With the weights as
ONNX *external data* in one file, ONNX Runtime maps that file into memory:
the same session takes 0.15 s, and only the pages a batch touches are ever
read (and counted in the member's RSS).

:func:`mapped_graph` writes that copy once, next to the graph it comes from,
named after the source's size and modification time (an export rewritten in
place gets a new copy), under a lock so members starting together write it
once; readers only ever see a finished file (the graph is renamed into place
after its weights). Outputs are bit-identical to the source's
(``tests/unit/test_mapped_graph.py``). Graphs under ``MIN_BYTES`` are used as
they are: their copy costs little.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("pipeline.models.mapped")

MIN_BYTES = 32 * 2**20
TENSOR_MIN_BYTES = 1024  # smaller tensors stay in the graph file


def mapped_name(onnx_path: Path) -> str:
    """The copy's file name: the source's stem and a hash of its size and mtime."""
    stat = onnx_path.stat()
    tag = hashlib.sha256(f"{onnx_path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{onnx_path.stem}.mapped-{tag}.onnx"


def mapped_graph(onnx_path: Path, *, min_bytes: int = MIN_BYTES) -> Path:
    """The external-data copy of ``onnx_path`` (written on first use), or ``onnx_path`` when it is small or the
    copy cannot be written (a read-only cache: the session is then built from the original, only slower)."""
    try:
        if onnx_path.stat().st_size < min_bytes:
            return onnx_path
        target = onnx_path.with_name(mapped_name(onnx_path))
        if target.is_file():
            return target
        with _locked(onnx_path.with_name(f".{target.name}.lock")):
            if not target.is_file():  # not written by whoever held the lock
                _write(onnx_path, target)
        return target
    except OSError as exc:
        log.warning("using %s as it is: its mapped copy cannot be written (%s)", onnx_path, exc)
        return onnx_path


def _write(source: Path, target: Path) -> None:
    import onnx  # only the first start after an export needs it

    data_name = f"{target.name}.data"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = onnx.load(str(source))
        onnx.save_model(
            model, str(tmp / target.name), save_as_external_data=True, all_tensors_to_one_file=True,
            location=data_name, size_threshold=TENSOR_MIN_BYTES,
        )  # fmt: skip
        for path in (tmp / data_name, tmp / target.name):  # the weights first: the graph names them
            os.chmod(path, 0o644)
            os.replace(path, target.parent / path.name)
        log.info("wrote %s (weights in %s, mapped by ONNX Runtime)", target, data_name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _locked:
    """An exclusive file lock, as the export cache takes one (pipeline.models.export)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.handle = self.path.open("a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
