"""``pipeline bench``: the pipeline side by side with raw ONNX Runtime, transformers and a naive consumer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="throughput, latency and CPU per request: raw ONNX Runtime, transformers, naive consumer, the pipeline",
        description="Measure, in one run on the same texts and cores, raw ONNX Runtime at its best batch (the "
        "limit), transformers eager, a naive per-message Kafka consumer and the pipeline under each processing "
        "guarantee; print a table and the ratios. Uses the broker at --bootstrap-servers under a fresh prefix.",
    )
    bench.add_argument("--quick", action="store_true", help="small loads, for tests: the numbers are rough")
    bench.add_argument("--threads", type=int, default=0,
                       help="ORT / torch threads of the in-process rows (default: this machine's cores)")  # fmt: skip
    bench.add_argument("--batches", default="1,8,16,32,64", help="raw ORT batch sizes to sweep (default 1,8,16,32,64)")
    bench.add_argument("--guarantees", default="exactly_once,at_least_once", help="pipeline rows, comma-separated")
    bench.add_argument("--members", default="1",
                       help="members per row (extra rows: exactly_once): infer counts, e.g. 1,2, or per-stage "
                       "settings separated by ';', e.g. 'filter=2,split=2,infer=1,merge=2;infer=4' "
                       "(a stage not named runs one)")  # fmt: skip
    bench.add_argument("--no-eager", action="store_true", help="skip the transformers eager row")
    bench.add_argument("--no-naive", action="store_true", help="skip the naive consumer row")
    bench.add_argument("--int8", action="store_true", help="add a raw ORT row for the int8 export (if exported)")
    bench.add_argument("--gpu", action="store_true",
                       help="add CUDA rows (I/O binding, fp16 with a parity check) and the pipeline on CUDA; "
                       "says 'skipped: no CUDA' where there is none")  # fmt: skip
    bench.add_argument("--also", action="append", default=[], metavar="PIPELINE_X=VALUE",
                       help="an extra exactly_once row with this setting changed (repeatable)")  # fmt: skip
    bench.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                       help="an extra exactly_once row whose members run another checkout's code, e.g. "
                       "main=/tmp/main after `git worktree add /tmp/main main` (repeatable): a code "
                       "change A/B'd in one run")  # fmt: skip
    bench.add_argument("--json", type=Path, help="also write the result as JSON here")
    add_cluster_args(bench)
    bench.set_defaults(func=cmd_bench)


def _variant(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("PIPELINE_"):
        raise SystemExit(f"--also {text!r}: write PIPELINE_SETTING=VALUE")
    return key, value


def _tree(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not (Path(path) / "pipeline" / "cli.py").is_file():
        raise SystemExit(f"--tree {text!r}: write LABEL=PATH, PATH a checkout of this project (with pipeline/cli.py)")
    return label, Path(path).resolve()


def _members(text: str) -> tuple[Any, ...]:
    from pipeline.tools.bench.through import parse_members

    try:
        return parse_members(text)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def cmd_bench(args: argparse.Namespace) -> int:
    import orjson

    from pipeline.tools.bench.report import render
    from pipeline.tools.bench.run import Options, run_bench

    settings = settings_from(args)
    options = Options(
        quick=args.quick,
        threads=args.threads or len(os.sched_getaffinity(0)),
        batches=tuple(int(b) for b in args.batches.split(",")),
        guarantees=tuple(g for g in args.guarantees.split(",") if g),
        members=_members(args.members),
        eager=not args.no_eager,
        naive=not args.no_naive,
        int8=args.int8,
        gpu=args.gpu,
        variants=tuple(_variant(v) for v in args.also),
        trees=tuple(_tree(t) for t in args.tree),
    )
    result = run_bench(settings, options, say=lambda line: print(line, flush=True))
    print()
    print(render(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        print(f"\nJSON: {args.json}")
    return 0
