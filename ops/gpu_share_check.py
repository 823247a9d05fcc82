"""Do N infer members share one GPU? ``python ops/gpu_share_check.py --members 4``

Each of N processes does what an infer member does before and after it joins
its group: ``Settings.from_env()``, infer's ``build`` (every task with a model:
embed and faq here, so bm25s loads), then it answers batches of embed and faq
parts on the provider it got, for ``--seconds``. While they run, the parent
reads each process's GPU memory from ``nvidia-smi``; at the end each member
says whether jax is in its ``sys.modules``, how many parts it answered ok and
how many failed (``model_error``).

``--plain-bm25s`` makes each member ``import bm25s`` first, as the code did
before issue 19 (jax, where installed, then preallocates 75 % of the GPU in
the first member): the A/B that shows what the fix buys. No broker is needed.
Set ``PIPELINE_PROVIDER=cuda`` (and ``PIPELINE_GPU_MEM_LIMIT_MB``) as for the
members themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEMBER = """
import json, sys, time
plain, seconds = sys.argv[1] == "1", float(sys.argv[2])
if plain:
    import bm25s  # the import as it was before issue 19
from pipeline.messages import Request
from pipeline.models.tokenizer import load_tokenizer
from pipeline.settings import Settings
from pipeline.stages.infer import build_infer
from pipeline.tasks import get_task

began = time.monotonic()
settings = Settings.from_env()
infer = build_infer(settings)
built = time.monotonic() - began
tokenizer = load_tokenizer(settings.model_for("embed"))
texts = ["Where is my parcel? It left the warehouse on Monday and has not arrived.",
         "How do I return a pair of shoes that do not fit?", "Can I pay with a gift card?"] * 22
parts = []
for n, text in enumerate(texts):
    task = "faq" if n % 2 else "embed"
    parts += get_task(task).split(Request(f"r{n}", task, text=text), tokenizer, settings)
print(json.dumps({"ready": True}), flush=True)
ok = failed = batches = 0
errors = set()
stop = time.monotonic() + seconds
while time.monotonic() < stop or not batches:
    for result in infer(parts):
        if "error" in result.output:
            failed += 1
            errors.add(str(result.output["error"].get("message", ""))[:160])
        else:
            ok += 1
    batches += 1
print(json.dumps({"provider": infer.providers, "build_s": round(built, 2), "batches": batches, "parts_ok": ok,
                  "parts_failed": failed, "errors": sorted(errors)[:2],
                  "jax_imported": "jax" in sys.modules}), flush=True)
"""


def gpu_memory_by_pid() -> dict[int, int]:
    """MiB of GPU memory per process, from nvidia-smi ({} where it cannot say)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=False,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[int, int] = {}
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip().isdigit() and used.strip().isdigit():
            found[int(pid)] = int(used)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each member answers batches")
    parser.add_argument("--plain-bm25s", action="store_true", help="import bm25s as before issue 19 (the A/B)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)  # as on a GPU image: jax's default, 75 %
    command = [sys.executable, "-c", MEMBER, "1" if args.plain_bm25s else "0", str(args.seconds)]
    members = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(args.members)
    ]
    peak: dict[int, int] = {}
    while any(m.poll() is None for m in members):
        for pid, used in gpu_memory_by_pid().items():
            peak[pid] = max(peak.get(pid, 0), used)
        time.sleep(1.0)
    total_ok = total_failed = 0
    for n, member in enumerate(members):
        out, err = member.communicate()
        last = [line for line in out.splitlines() if line.startswith("{")][-1:] or ["{}"]
        report = json.loads(last[0])
        total_ok += report.get("parts_ok", 0)
        total_failed += report.get("parts_failed", 0)
        print(f"member {n} (pid {member.pid}): exit {member.returncode}, GPU memory peak "
              f"{peak.get(member.pid, 0)} MiB, {json.dumps(report)}")  # fmt: skip
        if member.returncode != 0:
            print("  " + "\n  ".join(err.strip().splitlines()[-4:]))
    print(f"{args.members} members{' (plain bm25s import)' if args.plain_bm25s else ''}: "
          f"{total_ok} parts ok, {total_failed} failed; GPU memory per process (MiB): "
          f"{[peak.get(m.pid, 0) for m in members]}")  # fmt: skip
    return 0 if total_failed == 0 and all(m.returncode == 0 for m in members) else 1


if __name__ == "__main__":
    sys.exit(main())
