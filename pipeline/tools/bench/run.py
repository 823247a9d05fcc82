"""One bench run: every row on the same texts and cores, in a fixed order, with progress as it goes."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipeline.models.session import feeds, ort_session
from pipeline.settings import Settings
from pipeline.tools.bench import baselines, through
from pipeline.tools.bench.report import ratios

Say = Callable[[str], None]


@dataclass
class Options:
    quick: bool = False
    threads: int = 2
    batches: tuple[int, ...] = (1, 8, 16, 32, 64)
    guarantees: tuple[str, ...] = ("exactly_once", "at_least_once")
    # Members per stage, one exactly_once pipeline row for each setting other than one member per stage.
    members: tuple[through.Members, ...] = (through.ONE,)
    eager: bool = True
    naive: bool = True
    int8: bool = False
    gpu: bool = False  # CUDA rows (I/O binding, fp16) and the pipeline on CUDA; skipped without CUDA
    # Extra exactly_once rows, each with one PIPELINE_* setting changed: defaults A/B'd in one run.
    variants: tuple[tuple[str, str], ...] = ()
    # Extra exactly_once rows whose members run another checkout's code (label, its root): code A/B'd in one run.
    trees: tuple[tuple[str, Path], ...] = ()

    @property
    def seconds(self) -> float:
        return 0.6 if self.quick else 3.0

    @property
    def plan(self) -> through.Plan:
        return through.Plan(burst=150, light_s=2.0, half_s=2.0, warmup=10) if self.quick else through.Plan()


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def run_bench(settings: Settings, options: Options, say: Say = print) -> dict[str, Any]:
    """Measure every row; the result as a JSON-ready dict (see :mod:`pipeline.tools.bench.report`)."""
    from pipeline.models.export import ensure_exported
    from pipeline.models.packaged import local_model
    from pipeline.models.tokenizer import load_tokenizer

    settings = settings.replace(prefix=f"{settings.kafka.prefix}bench{uuid.uuid4().hex[:6]}-", answer_cache_max_bytes=0)
    corpus = baselines.texts(400 if options.quick else 2048)
    result: dict[str, Any] = {"texts": len(corpus), "words": 12, "threads": options.threads,
                              "cpus": len(os.sched_getaffinity(0)), "load_before": _load(), "rows": {},
                              "notes": [], "prefix": settings.kafka.prefix, "quick": options.quick}  # fmt: skip
    began = time.monotonic()
    exported = ensure_exported(settings.models.embed_model, "embed", settings)
    tokenizer = load_tokenizer(exported.path)
    say(f"[{time.monotonic() - began:5.0f}s] raw ONNX Runtime ({exported.onnx_path}), {options.threads} threads")
    sweep = baselines.raw_ort("raw ort", exported.onnx_path, tokenizer, corpus, options.batches, options.threads,
                              options.seconds, say)  # fmt: skip
    result["model_ms_batch1"] = sweep.single_ms_p50
    plan = options.plan
    # About 8 s of work at the limit's rate: long enough to measure, short of the 30 s request deadline.
    plan.burst = min(plan.burst, max(150, int(8 * sweep.best)))
    probe = _probe(exported.onnx_path, tokenizer, corpus, options.threads)
    if 1 not in options.batches:  # the sweep did not time one text alone
        result["model_ms_batch1"] = probe()
    result["rows"]["raw ort"] = {"throughput": sweep.best, "batch": sweep.best_batch, "per_batch": sweep.per_batch}
    if options.int8:
        from pipeline.models.quantize_encoder import int8_file

        path = int8_file(exported)
        if path.exists():
            q = baselines.raw_ort("raw ort int8", path, tokenizer, corpus, options.batches, options.threads,
                                  options.seconds, say)  # fmt: skip
            result["rows"]["raw ort int8"] = {"throughput": q.best, "batch": q.best_batch, "per_batch": q.per_batch}
        else:
            result["notes"].append(f"no int8 export at {path}: run pipeline model export --task embed --quantize int8")
    cuda = False
    if options.gpu:
        from pipeline.tools.bench.gpu import gpu_rows

        say(f"[{time.monotonic() - began:5.0f}s] CUDA: raw ONNX Runtime with I/O binding, fp32 and fp16")
        rows_gpu, notes = gpu_rows(exported.onnx_path, tokenizer, corpus, options.batches, options.seconds, say)
        result["rows"].update(rows_gpu)
        result["notes"].extend(notes)
        cuda = bool(rows_gpu)
    if options.eager:
        say(f"[{time.monotonic() - began:5.0f}s] transformers eager")
        eager_batches = (1, sweep.best_batch) if sweep.best_batch != 1 else (1,)
        model_dir = local_model(settings.models.embed_model, settings.models.model_cache_dir)
        eager = baselines.transformers_eager(model_dir, tokenizer, corpus, eager_batches, options.threads,
                                             options.seconds, say)  # fmt: skip
        result["rows"]["transformers eager"] = {"throughput": eager.best, "batch": eager.best_batch,
                                                "per_batch": eager.per_batch}  # fmt: skip
    if options.naive:
        say(f"[{time.monotonic() - began:5.0f}s] naive consumer (one message: model, produce, flush, commit)")
        model = _naive_model(exported.onnx_path, tokenizer, options.threads)
        count = 100 if options.quick else 600
        tput, cpu = through.naive_row(settings, model, corpus, count, say)
        result["rows"]["naive consumer"] = {"throughput": tput, "batch": 1, "cpu_per_request": cpu}
    rows = [(g, through.ONE) for g in options.guarantees]
    scaled = [m for m in options.members if m != through.ONE]
    if not cuda:  # with CUDA the scaled rows run there (below), where members share the GPU
        rows += [("exactly_once", m) for m in scaled]

    def limit_now() -> float:
        # The machine's load moves between the sweep and a row minutes later: each
        # row is also compared with the limit measured just before it.
        again = baselines.raw_ort("raw ort again", exported.onnx_path, tokenizer, corpus, (sweep.best_batch,),
                                  options.threads, min(options.seconds, 2.0), say)  # fmt: skip
        return again.best

    try:
        for guarantee, members in rows:
            shape = ", ".join(f"{stage} {n}" for stage, n in members)
            say(f"[{time.monotonic() - began:5.0f}s] pipeline, {guarantee}, members: {shape}")
            limit = limit_now()
            row = through.pipeline_row(settings, guarantee, members, corpus, plan, say, probe=probe)
            result["rows"][row.name] = {**_row_dict(row), "limit_before": limit}
            result["notes"].extend(f"{row.name}: {n}" for n in row.notes)
        for n, (key, value) in enumerate(options.variants):
            say(f"[{time.monotonic() - began:5.0f}s] pipeline, exactly_once, {key}={value}")
            changed = Settings.from_env(env={**settings.to_env(secrets=True), key: value})
            label = f" [{key.removeprefix('PIPELINE_').lower()}={value}]"
            # A-B-A-B runs repeat a variant: each repeat is its own row, on its own topics.
            repeat = options.variants[:n].count((key, value))
            limit = limit_now()
            row = through.pipeline_row(changed, "exactly_once", through.ONE, corpus, plan, say, probe=probe,
                                       label=f"{label} #{repeat + 1}" if repeat else label)  # fmt: skip
            result["rows"][row.name] = {**_row_dict(row), "limit_before": limit}
        for label, root in options.trees:
            say(f"[{time.monotonic() - began:5.0f}s] pipeline, exactly_once, the code at {root}")
            limit = limit_now()
            row = through.pipeline_row(settings, "exactly_once", through.ONE, corpus, plan, say, probe=probe,
                                       label=f" [{label}]", source=root)  # fmt: skip
            result["rows"][row.name] = {**_row_dict(row), "limit_before": limit, "source": str(root)}
        if cuda:
            say(f"[{time.monotonic() - began:5.0f}s] pipeline on CUDA, exactly_once")
            on_gpu = settings.replace(provider="cuda")
            row = through.pipeline_row(on_gpu, "exactly_once", through.ONE, corpus, plan, say, label=" cuda")
            result["rows"][row.name] = _row_dict(row)
            for members in scaled:
                shape = ", ".join(f"{stage} {n}" for stage, n in members)
                say(f"[{time.monotonic() - began:5.0f}s] pipeline on CUDA, exactly_once, members: {shape}")
                row = through.pipeline_row(on_gpu, "exactly_once", members, corpus, plan, say, label=" cuda")
                result["rows"][row.name] = _row_dict(row)
    finally:
        _clean_up(settings)
    result["load_after"] = _load()
    result["seconds"] = round(time.monotonic() - began, 1)
    result["ratios"] = ratios(result)
    say(f"[{time.monotonic() - began:5.0f}s] done")
    return result


def _clean_up(settings: Settings) -> None:
    """The bench's topics and groups (all under its own prefix) are deleted: they only held its load."""
    from pipeline.errors import PipelineError
    from pipeline.operations.admin import delete_prefixed

    try:
        delete_prefixed(settings)
    except PipelineError as exc:  # a leftover is untidy, not a failed bench
        print(f"could not delete the bench's topics ({settings.kafka.prefix}*): {exc}")


def _row_dict(row: through.PipelineRow) -> dict[str, Any]:
    out: dict[str, Any] = {"throughput": row.throughput, "cpu_per_request": row.cpu_per_request, "errors": row.errors,
                           "model_ms": row.model_ms, "members": row.counts}  # fmt: skip
    if row.light is not None:
        out.update(light_p50_ms=row.light.p50_ms, light_p99_ms=row.light.p99_ms, hops_p50_ms=row.light.hops_p50_ms)
    if row.half is not None:
        out.update(half_rate=row.half.rate, half_p50_ms=row.half.p50_ms, half_p99_ms=row.half.p99_ms)
    return out


def _probe(onnx_path: Any, tokenizer: Any, corpus: list[str], threads: int) -> Callable[[], float]:
    """Times one text at a time through the model alone for about a second: the p50 in ms."""
    from pipeline.tools.bench.stats import percentile

    session = ort_session(onnx_path, threads)
    names = [i.name for i in session.get_inputs()]
    prepared = [feeds(tokenizer, [text], names) for text in corpus[:32]]

    def probe() -> float:
        _, _, calls = baselines.timed(lambda feed: len(session.run(None, feed)), prepared, 1.0)
        return percentile(calls, 0.5) * 1000

    return probe


def _naive_model(onnx_path: Any, tokenizer: Any, threads: int) -> Callable[[bytes], bytes]:
    """Request JSON in, answer JSON out: tokenize one text, run it alone, normalise."""
    session = ort_session(onnx_path, threads)
    names = [i.name for i in session.get_inputs()]

    def model(value: bytes) -> bytes:
        request = orjson.loads(value)
        vector = session.run(None, feeds(tokenizer, [request["text"]], names))[0][0]
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return orjson.dumps({"id": request["id"], "status": "ok", "task": "embed",
                             "result": {"embedding": vector.tolist()}})  # fmt: skip

    return model
