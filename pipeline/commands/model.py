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
    export.add_argument(
        "--compare",
        action="append",
        choices=("int4", "int8"),
        help="chat: run the check prompts greedy on this quantised reply model and on fp32, side by side (repeatable)",
    )
    export.add_argument("--check-tokens", type=int, default=32, help="with --compare: new tokens per check prompt")
    export.add_argument(
        "--quantize",
        choices=("int8",),
        help="embed/faq/chat encoder: also make its int8 graph (ONNX Runtime dynamic quantisation) and check it "
        "against fp32 (embedding cosine, faq top-1); PIPELINE_ENCODER_INT8=true serves it once the check passed",
    )
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
    if args.quantize:
        return _quantize_encoder(exported, settings)
    if args.task == "chat" and settings.chat.chat_model:
        _export_decoder(settings, args)
    return 0


def _quantize_encoder(exported: Any, settings: Settings) -> int:
    """The encoder's int8 graph, made and checked against fp32; non-zero when the check fails."""
    from pipeline.models.quantize_encoder import quantize_encoder
    from pipeline.tools.quality.check_encoder import check_encoder

    if exported.meta.task != "embed":
        print(f"--quantize int8 is for the sentence encoder (embed, faq, chat), not a {exported.meta.task} model")
        return 2
    path = quantize_encoder(exported)
    print(f"{path}  (int8, {path.stat().st_size / 1e6:.0f} MB; fp32 {exported.onnx_path.stat().st_size / 1e6:.0f} MB)")
    check = check_encoder(exported, settings)
    print("  " + check.render())
    if check.passed:
        print("  serve it with PIPELINE_ENCODER_INT8=true")
    return 0 if check.passed else 1


def _export_decoder(settings: Settings, args: argparse.Namespace) -> None:
    """chat's reply model: the decoder with a KV cache, its quantised variants, and their comparison."""
    from pipeline.models.export import ensure_exported
    from pipeline.models.quantize import VARIANTS, compare, variant_file

    exported = ensure_exported(settings.chat.chat_model, "decoder", settings, force=args.force)
    meta, shape = exported.meta, exported.meta.decoder
    assert shape is not None
    print(f"{exported.onnx_path}")
    print(f"  the reply model {meta.model}: a decoder with a KV cache, {shape.layers} layers, "
          f"{shape.kv_heads} key/value heads of {shape.head_dim}, end tokens {list(shape.eos_token_ids)}")  # fmt: skip
    print("  inputs input_ids, attention_mask, position_ids, past_key_values.{i}.key/value "
          "-> outputs logits (last position), present.{i}.key/value")  # fmt: skip
    print(
        f"  verified against PyTorch (prefill and steps, padded rows): max abs diff of the logits {meta.max_diff:.3e}"
    )
    print(f"  {'from cache' if exported.from_cache else 'exported now'}")
    for variant in VARIANTS:
        if variant != "fp32":
            path = variant_file(exported, variant)
            print(f"{path}  ({variant}, {path.stat().st_size / 1e6:.0f} MB)")
    if args.compare:
        from transformers import AutoTokenizer

        from pipeline.models.generator import chat_ids

        tokenizer = AutoTokenizer.from_pretrained(str(exported.path))
        prompts = [chat_ids(tokenizer, q) for q in CHECK_PROMPTS]
        for variant in dict.fromkeys(args.compare):
            print("  " + compare(exported, variant, prompts, tokens=args.check_tokens).render())
