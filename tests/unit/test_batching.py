"""Micro-batching: token budget, one task per batch, padding."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.messages import Part
from pipeline.models.batching import pad, plan_batches


def part(task: str, length: int, index: int = 0) -> Part:
    return Part(id=f"r{index}", task=task, part=0, of=1, input_ids=list(range(1, length + 1)))


def test_batches_respect_the_token_budget_and_the_row_limit() -> None:
    rng = random.Random(1)
    parts = [part(rng.choice(["qa", "embed"]), rng.randint(1, 120), i) for i in range(200)]
    batches = plan_batches(parts, max_parts=8, max_tokens=300)
    assert sorted(i for b in batches for i in b) == list(range(len(parts)))  # each part exactly once
    for batch in batches:
        longest = max(len(parts[i].input_ids) for i in batch)
        assert len(batch) <= 8
        assert len(batch) * longest <= 300
        assert len({parts[i].task for i in batch}) == 1


def test_similar_lengths_share_a_batch() -> None:
    lengths = [100, 3, 98, 4, 99, 5]
    parts = [part("qa", n, i) for i, n in enumerate(lengths)]
    batches = plan_batches(parts, max_parts=3, max_tokens=10_000)
    assert [sorted(lengths[i] for i in b) for b in batches] == [[3, 4, 5], [98, 99, 100]]


def test_a_part_over_the_budget_runs_alone() -> None:
    parts = [part("qa", 10), part("qa", 500), part("qa", 12)]
    batches = plan_batches(parts, max_parts=8, max_tokens=100)
    assert [1] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_batches([part("qa", 3)], max_parts=0, max_tokens=10)


def test_pad_right_pads_with_the_pad_id_and_masks_padding() -> None:
    parts = [
        Part("a", "qa", 0, 1, [5, 6, 7], token_type_ids=[0, 1, 1]),
        Part("b", "qa", 0, 1, [8]),
    ]
    feeds = pad(parts, pad_id=0, input_names=["input_ids", "attention_mask", "token_type_ids"])
    assert feeds["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert feeds["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 0]]
    assert all(v.dtype == np.int64 for v in feeds.values())
    assert set(pad(parts, 0, ["input_ids", "attention_mask"])) == {"input_ids", "attention_mask"}
