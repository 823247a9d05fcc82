"""The ``pipeline`` command.

Each command group lives in its own module under ``pipeline.commands`` and
registers its subcommands here; this file only assembles them, so ``pipeline
--help`` reads as the table of contents of what an operator can do.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pipeline.errors import PipelineError

# Command groups in the order --help lists them; each module has register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "pipeline.commands.kafka",  # pipeline kafka start|stop|status
    "pipeline.commands.topics",  # pipeline topics apply|list
    "pipeline.commands.model",  # pipeline model export
    "pipeline.commands.run",  # pipeline run <stage>, pipeline up
    "pipeline.commands.health",  # pipeline health (liveness probes)
    "pipeline.commands.status",  # pipeline status (every stage's group: lag, rates, state)
    "pipeline.commands.scale",  # pipeline scale STAGE=N (a running pipeline up)
    "pipeline.commands.monitor",  # pipeline monitor (faust-streaming: windows, lag, advice, live page)
    "pipeline.commands.k8s",  # pipeline k8s (the Kubernetes manifests)
    "pipeline.commands.ask",  # pipeline ask, pipeline eval
    "pipeline.commands.chat",  # pipeline chat
    "pipeline.commands.chat_bench",  # pipeline chat-bench
    "pipeline.commands.bench",  # pipeline bench (the pipeline side by side with raw ONNX Runtime)
    "pipeline.commands.demo",  # pipeline demo
    "pipeline.commands.chaos",  # pipeline chaos SCENARIO
    "pipeline.commands.redrive",  # pipeline redrive
    "pipeline.commands.replay",  # pipeline replay (recorded requests through a candidate; a rollout gate)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # librdkafka's connection chatter (and its errors while a broker restarts,
    # which it retries by itself) stays out of a command's output.
    logging.getLogger("librdkafka").setLevel(logging.WARNING if args.command == "run" else logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except PipelineError as exc:
        print(f"pipeline {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
