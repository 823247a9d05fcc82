"""``pipeline eval --chat``: the chat evaluation (:mod:`pipeline.tools.quality.chat_eval`) through the running pipeline.

Every question goes through the plain Kafka client as task ``chat``, one at a
time (light load: the figures are a single conversation's): a fresh session
per question, one session per conversation with its turns in order. A fresh
session also keeps the answer cache out of it (a request with a session never
uses the cache), so every reply is written anew.
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from pipeline.commands.common import settings_from
from pipeline.tools.quality import chat_eval as ce

PART_TITLES = {"english": "English", "chinese": "Chinese", "conversations": "conversations"}
COLUMNS = ("right entry", "all facts", "grounded", "no contradiction", "pass", "fallback", "retrieved")
COUNTED = ("right_entry", "facts", "grounded", "no_contradiction", "pass", "fallback", "retrieved")


def add_args(ev: argparse.ArgumentParser) -> None:
    ev.add_argument(
        "--chat",
        action="store_true",
        help="instead: the chat evaluation (pipeline/data/chat_eval_*.json) through the running pipeline, "
        "one conversation at a time; the held-out set unless --tuning (--heldout --tuning: both)",
    )
    ev.add_argument("--limit", type=int, help="--chat: at most N questions (conversations) per part")
    ev.add_argument("--json", dest="json_path", metavar="PATH", help="--chat: every item, reply and criteria here")
    ev.add_argument(
        "--min-pass", type=float, metavar="FRACTION", help="--chat: exit 1 when a part's pass share is below this"
    )
    ev.add_argument(
        "--show-failures",
        action="store_true",
        help="--chat: print each failed item (the held-out set's questions and replies only go to --json)",
    )


def cmd_chat_eval(args: argparse.Namespace) -> int:
    from pipeline.client import AnswerTimeoutError, Client

    names = (["heldout"] if args.heldout or not args.tuning else []) + (["tuning"] if args.tuning else [])
    kbs = ce.load_kbs()
    settings = settings_from(args)
    records: list[dict[str, Any]] = []
    below: list[str] = []
    with Client(settings) as client:

        def ask(text: str, session: str) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
            request = {"task": "chat", "text": text, "session": session}
            began = time.monotonic()
            try:
                answer = client.ask(request, timeout_s=args.timeout)
            except AnswerTimeoutError:
                return "timeout", None, {"id": None, "took_s": round(time.monotonic() - began, 2)}
            status = "ok" if answer.ok else (answer.error.code if answer.error else "error")
            return status, answer.result, {"id": answer.id, "took_s": round(time.monotonic() - began, 2)}

        for name in names:
            evalset = ce.load_set(name)
            tallies: dict[str, ce.Tally] = {}
            for part in ce.PARTS:
                tally = tallies[part] = ce.Tally()
                for turns in evalset.part(part)[: args.limit]:
                    session = f"chateval-{uuid.uuid4().hex[:12]}"
                    earlier: list[tuple[str, dict[str, Any] | None]] = []
                    for question in turns:
                        status, result, meta = ask(question.text, session)
                        score = ce.score(question, status, result, kbs, earlier)
                        tally.add(score, result)
                        earlier.append((question.text, result))
                        records.append(_record(name, part, question, score, result, meta))
                        if args.show_failures and not score.passed:
                            print(_failure(name, question, score, result))
            print(render_table(evalset.name, tallies))
            if args.min_pass is not None:
                below += [f"{name} {p}" for p, t in tallies.items() if t.n and t.share("pass") < args.min_pass]
    if args.json_path:
        Path(args.json_path).write_bytes(orjson.dumps(records, option=orjson.OPT_INDENT_2))
        print(f"every item, its reply and criteria: {args.json_path}")
    if below:
        print(f"pass share below {args.min_pass:g}: {', '.join(below)}")
        return 1
    return 0


def _record(
    name: str, part: str, question: ce.Question, score: ce.Score, result: dict[str, Any] | None, meta: dict[str, Any]
) -> dict[str, Any]:
    result = result or {}
    return {
        "set": name, "part": part, "text": question.text, "expected_entries": list(question.entries),
        "reply": result.get("reply"), "entries": [e.get("entry") for e in result.get("entries") or []],
        **score.as_dict(), "first_token_ms": result.get("first_token_ms"), "tokens_per_s": result.get("tokens_per_s"),
        "grounding": result.get("grounding"), "request": meta,
    }  # fmt: skip


def _failure(name: str, question: ce.Question, score: ce.Score, result: dict[str, Any] | None) -> str:
    why = ", ".join(score.failed())
    head = f"  ✗ {name} {question.id} [{', '.join(question.entries)}]: {why}"
    if name == "heldout":
        # The held-out questions stay unseen by whoever tunes: their text and replies go to --json only.
        return head
    lines = [head, f"      » {question.text}", f"      « {str((result or {}).get('reply', '')).strip()}"]
    if score.missing_entries:
        got = [e.get("entry") for e in (result or {}).get("entries") or []]
        lines.append(f"      entries: expected {score.missing_entries}, got {got}")
    lines += [f"      missing one of {group}" for group in score.missing_facts]
    if score.ungrounded:
        lines.append(f"      not in the facts or the message: {score.ungrounded}")
    lines += [f"      contradicts /{pattern}/" for pattern in score.contradictions]
    return "\n".join(lines)


def render_table(name: str, tallies: dict[str, ce.Tally]) -> str:
    """One row per part: counts and shares per criterion, then time to first token and speed."""
    head = f"{'part':<14}{'n':>4}" + "".join(f"{c:>18}" for c in COLUMNS)
    lines = [f"chat evaluation, {name} set", head]
    for part, tally in tallies.items():
        cells = "".join(f"{f'{tally.counts[c]} ({tally.share(c):.0%})':>18}" for c in COUNTED)
        lines.append(f"{PART_TITLES[part]:<14}{tally.n:>4}{cells}")
    lines.append("")
    for part, tally in tallies.items():
        p50, p99 = ce.percentile(tally.first_token_ms, 50), ce.percentile(tally.first_token_ms, 99)
        speed = ce.percentile(tally.tokens_per_s, 50)
        lines.append(
            f"{PART_TITLES[part]:<14} time to first token p50 {_ms(p50)} p99 {_ms(p99)}"
            f" · tokens/s p50 {f'{speed:.1f}' if speed is not None else '-'} (of {len(tally.tokens_per_s)} generated)"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{value:.0f} ms" if value is not None else "-"
