"""How long a stage takes to build its logic in a fresh process: ``python -m pipeline.tools.chaos.start_time STAGE``.

What a restarted member does before it joins its group (issue 7 point 2):
its imports, ``Settings.from_env()`` and the stage's ``build``. Run it under
``/usr/bin/time`` for CPU time and peak RSS; docs/reliability.md compares
commits this way (each run a new process, so nothing is warm but the page
cache and the model cache).
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    began = time.perf_counter()
    if len(argv) != 1:
        print("usage: python -m pipeline.tools.chaos.start_time STAGE", file=sys.stderr)
        return 2
    import importlib

    from pipeline.settings import Settings

    module = importlib.import_module(f"pipeline.stages.{argv[0]}")
    imported = time.perf_counter()
    module.build(Settings.from_env())
    built = time.perf_counter()
    heavy = ", ".join(name for name in ("torch", "transformers") if name in sys.modules) or "none"
    print(
        f"{argv[0]}: imports {imported - began:.2f} s, build {built - imported:.2f} s, "
        f"total {built - began:.2f} s; torch/transformers imported: {heavy}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
