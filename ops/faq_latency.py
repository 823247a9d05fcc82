"""faq latency side by side: infer's core (model + postprocess) for faq, this checkout against a git ref.

The scoring runs in infer's postprocess, so that is where a change to it costs
time. The ref's code (default ``main``) is exported with ``git archive`` into
a temporary directory; each side runs in its own child process with its own
code first on ``PYTHONPATH`` and default settings, on the same questions (the
project's evaluation set, one sub-question per request), once with one
request per batch (the latency a lone customer sees) and once with 32 (a
busy stage); it times the whole of infer's core (model and scoring) and,
apart, the scoring alone (postprocess on the model's outputs), which is what
a scoring change moves and which a busy machine blurs least. The sides
alternate for a few rounds and each keeps its best lower quartile (of the
per-batch times), so a neighbour's load on a shared machine hurts neither
side alone.

    PYTHONPATH=. python ops/faq_latency.py [--ref main] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 32)


def child(repeats: int) -> None:
    """Time Infer on faq parts with the ``pipeline`` found first on the path; print JSON."""
    import logging

    logging.disable(logging.INFO)
    from pipeline.messages import Request
    from pipeline.models.batching import pad
    from pipeline.settings import Settings
    from pipeline.stages.infer import build_infer
    from pipeline.stages.split import build_split
    from pipeline.tasks import get_task
    from pipeline.tasks.faq.kb import load_eval

    settings = Settings.from_env(faq_multilingual_model="")
    infer = build_infer(settings, tasks=["faq"])
    tokenizer = build_split(settings).tokenizers["faq"]
    task = get_task("faq")
    questions = [q for q, _ in load_eval(ROOT / "pipeline" / "data" / "faq_eval.json")]
    parts = [
        p for i, q in enumerate(questions) for p in task.split(Request(f"r{i}", "faq", text=q), tokenizer, settings)
    ]
    served = infer.served["faq"]
    out: dict[str, float] = {}
    for size in BATCHES:
        batches = [parts[i : i + size] for i in range(0, len(parts), size)]
        infer(batches[0])  # warm up
        times, scoring = [], []
        for _ in range(repeats):
            for batch in batches:
                began = time.perf_counter()
                infer(batch)
                times.append((time.perf_counter() - began) * 1000 / len(batch))
                # The scoring alone: postprocess on this batch's model outputs, the model not timed.
                outputs = served.model.run(pad(batch, served.model.meta.pad_token_id, served.model.input_names))
                began = time.perf_counter()
                task.postprocess(batch, outputs, served.runtime)
                scoring.append((time.perf_counter() - began) * 1000 / len(batch))
        out[str(size)] = _quartile(times)
        out[f"{size} scoring"] = _quartile(scoring)
    print(json.dumps(out))


def _quartile(times: list[float]) -> float:
    """The lower quartile: the batch's own cost, with less of what other processes added."""
    return statistics.quantiles(times, n=4)[0]


def run_side(code: Path, repeats: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(repeats)],
        env=env, capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return {k: float(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="the git ref to compare with (default: main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the questions per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.repeats)
        return 0
    with tempfile.TemporaryDirectory(prefix="faq-latency-") as tmp:
        archive = Path(tmp) / "ref.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), args.ref, "pipeline"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(Path(tmp) / "ref", filter="data")
        sides = {args.ref: Path(tmp) / "ref", "this checkout": ROOT}
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, code in sides.items():
                result = run_side(code, args.repeats)
                best[name] = {k: min(v, best.get(name, {}).get(k, v)) for k, v in result.items()}
    ref, new = best[args.ref], best["this checkout"]
    print(f"faq in infer, ms per request, best lower quartile of {args.rounds} rounds")
    print(f"{'':>28} | {args.ref:>14} | {'this checkout':>14} | ratio")
    for size in BATCHES:
        for key, what in ((str(size), "model + scoring"), (f"{size} scoring", "scoring only")):
            label = f"{size} per batch, {what}"
            print(f"{label:>28} | {ref[key]:>14.3f} | {new[key]:>14.3f} | {new[key] / ref[key]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
