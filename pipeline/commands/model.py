"""``pipeline model export``: export a model to ONNX, verified, into the model cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.catalog import TASK_NAMES
from pipeline.settings import Settings

# Questions the int8 reply model is compared on (greedy, against fp32).
CHECK_PROMPTS = (
    "How do I reset my password?",
    "Can I return shoes that don't fit?",
    "How long does the refund take?",
    "Do you ship to Canada?",
    "What payment methods do you accept?",
    "My parcel hasn't arrived yet, where is it?",
    "Can I change my delivery address?",
    "How do I use a gift card?",
    "What is your warranty?",
    "How do I contact customer service?",
)


def register(sub: Any) -> None:
    model = sub.add_parser("model", help="export models to ONNX")
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="export a transformers model to ONNX, check it against PyTorch, cache it",
        description="Export a model for a task to ONNX, verify its outputs against PyTorch and cache it "
        "under PIPELINE_MODEL_CACHE_DIR. An unchanged model comes from the cache.",
    )
    export.add_argument("--task", required=True, choices=TASK_NAMES, help="what the model is for")
    export.add_argument(
        "--model",
        help="local model directory, or a hub id when a hub is reachable (default: the task's PIPELINE_*_MODEL)",
    )
    export.add_argument("--force", action="store_true", help="export again even if the cache is up to date")
    export.add_argument("--cache-dir", help="where exports are kept (PIPELINE_MODEL_CACHE_DIR)")
    export.add_argument("--quantize", choices=("int8",), help="chat: also make the int8 reply model and compare it")
    export.add_argument("--check-tokens", type=int, default=32, help="with --quantize: new tokens per check prompt")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.models.export import ensure_exported

    settings = Settings.from_env(model_cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    model = args.model or settings.model_for(args.task)
    exported = ensure_exported(model, args.task, settings, force=args.force)
    meta = exported.meta
    print(f"{exported.onnx_path}")
    print(f"  task {args.task} (export kind {meta.task}) from {meta.model}")
    print(f"  inputs {', '.join(meta.input_names)} -> outputs {', '.join(meta.output_names)}")
    if meta.labels:
        print(f"  labels {', '.join(meta.labels)}")
    print(f"  verified against PyTorch: max abs diff {meta.max_diff:.3e}")
    print(f"  {'from cache' if exported.from_cache else 'exported now'}")
    if args.task == "chat" and settings.chat_model:
        import orjson

        from pipeline.models.generation import ensure_decoder

        decoder = ensure_decoder(settings.chat_model, settings.model_cache_dir)
        meta = orjson.loads((decoder / "meta.json").read_bytes())
        print(f"{decoder / 'decoder.onnx'}")
        print(f"  the reply model {settings.chat_model}: a decoder with a KV cache, {meta['layers']} layers, "
              f"{meta['kv_heads']} key/value heads of {meta['head_dim']}")  # fmt: skip
        print(
            "  inputs input_ids, attention_mask, position_ids, past_k, past_v -> outputs logits, present_k, present_v"
        )
        if args.quantize == "int8":
            from transformers import AutoTokenizer

            from pipeline.models.quantize import compare, ensure_int8

            print(ensure_int8(decoder))
            tokenizer = AutoTokenizer.from_pretrained(str(decoder))
            print("  " + compare(decoder, tokenizer, CHECK_PROMPTS, tokens=args.check_tokens).render())
    return 0
