"""Talking to a running pipeline: ``pipeline ask``, ``pipeline eval`` (faq; ``--chat`` in :mod:`.chat_eval`)."""

from __future__ import annotations

import argparse
import contextlib
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import orjson

from pipeline.catalog import TASK_NAMES
from pipeline.commands import chat_eval
from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.errors import PipelineError
from pipeline.messages import Answer


def register(sub: Any) -> None:
    ask = sub.add_parser("ask", help="send one request to the running pipeline and print its answer")
    ask.add_argument("--task", choices=TASK_NAMES, default="faq")
    ask.add_argument("--text", help="the text (classify, embed, faq, chat)")
    ask.add_argument("--session", help="chat: the conversation this message belongs to")
    ask.add_argument("--max-tokens", type=int, help="chat: at most this many new tokens")
    ask.add_argument("--question", help="the question (qa)")
    ask.add_argument("--context", help="the context to find the answer in (qa)")
    ask.add_argument("--lang", help="faq: the text's language (zh, en, ...); detected from the text when absent")
    ask.add_argument("--timeout", type=float, default=30.0, help="seconds: the request's deadline")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_cluster_args(ask)
    ask.set_defaults(func=cmd_ask)

    ev = sub.add_parser(
        "eval", help="top-1 accuracy of the faq task (--chat: the chat evaluation) through the running pipeline"
    )
    ev.add_argument("--file", help="evaluation set (default: the shipped pipeline/data/faq_eval.json)")
    ev.add_argument("--timeout", type=float, default=60.0)
    ev.add_argument(
        "--heldout",
        action="store_true",
        help="instead: top-1 on the held-out test set (never used for tuning) and on two-question messages "
        "built from it, with the misses and how often the answer said it was unsure",
    )
    ev.add_argument(
        "--tuning",
        action="store_true",
        help="with --heldout: the same report on the tuning set (and two-question messages built from it), "
        "to study misses without looking at the test set",
    )
    ev.add_argument(
        "--offline", action="store_true", help="with --heldout or --file: answer in this process, no broker"
    )
    ev.add_argument(
        "--calibrate",
        action="store_true",
        help="instead: choose faq's fusion weights, threshold and unsure margin on the tuning set only "
        "(in this process, no broker) and print them as PIPELINE_FAQ_* settings",
    )
    chat_eval.add_args(ev)
    add_cluster_args(ev)
    ev.set_defaults(func=cmd_eval)


def cmd_ask(args: argparse.Namespace) -> int:
    from pipeline.client import Client

    fields = ("text", "question", "context", "session", "max_tokens", "lang")
    request: dict[str, Any] = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
    request["task"] = args.task
    with Client(settings_from(args)) as client:
        if args.task == "chat" and not args.json:
            answer = print_streamed(client.stream(request, timeout_s=args.timeout))
            print(reply_stats(answer))
            return 0 if answer.ok else 2
        answer = client.ask(request, timeout_s=args.timeout)
    if args.json:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(answer))
    return 0 if answer.ok else 2


def print_streamed(items: Iterator[str | Answer]) -> Answer:
    """Print a chat reply as it comes; the final answer."""
    for item in items:
        if isinstance(item, Answer):
            print()
            if item.error is not None:
                print(f"  ✗ {item.error.code}: {item.error.message}")
            return item
        print(item, end="", flush=True)
    raise PipelineError("the stream ended without an answer")


def reply_stats(answer: Answer) -> str:
    """One line on how a chat reply was made: time to first token, speed, tokens, cache."""
    result = answer.result or {}
    tokens = result.get("tokens") or {}
    first, speed = result.get("first_token_ms"), result.get("tokens_per_s")
    parts = [
        "from the answer cache" if answer.cached else f"first token {first:.0f} ms" if first is not None else "",
        f"{speed:.1f} tokens/s" if speed and not answer.cached else "",
        f"{tokens.get('completion', 0)} tokens (prompt {tokens.get('prompt', 0)})",
        f"{result.get('turns_in_prompt', 0)} earlier turns" if result.get("session") else "",
        "entries " + ", ".join(e["entry"] for e in result.get("entries", []) if e.get("matched")),
        _grounding(result.get("grounding")),
    ]
    return "  ⏱ " + " · ".join(p for p in parts if p)


def _grounding(report: dict[str, Any] | None) -> str:
    """How the reply's sentences fared in the check: "checked 2, 1 replaced"."""
    if not report:
        return ""
    said = f"{report.get('lead', 0)} from the facts + {report.get('kept', 0)} checked"
    changed = [f"{report[k]} {k}" for k in ("replaced", "dropped") if report.get(k)]
    return said + (f" ({', '.join(changed)})" if changed else "")


def render(answer: Answer, asked: str | None = None) -> str:
    """An answer as a person wants to read it."""
    lines = []
    if asked:
        lines.append(f"» {asked}")
    if answer.ok and answer.result is not None:
        lines.append(textwrap.indent(_result_text(answer.task, answer.result), "  "))
    elif answer.error is not None:
        lines.append(f"  ✗ {answer.error.code}: {answer.error.message}")
        if answer.result:
            lines.append(textwrap.indent(_result_text(answer.task, answer.result), "  (partial) "))
    hops = " → ".join(f"{hop} {ms:.1f}" for hop, ms in answer.latency_ms.items())
    total = sum(answer.latency_ms.values())
    lines.append(f"  ⏱ {total:.1f} ms  ({hops} ms)" if hops else "  ⏱ (no hop timings)")
    return "\n".join(lines)


def _result_text(task: str | None, result: dict[str, Any]) -> str:
    if task == "faq":
        lines = []
        for a in result.get("answers", []):
            said = a.get("answer") if a.get("matched") else f"(no entry is close enough; best was {a.get('entry')})"
            lines.append(f"[{a.get('entry')} · {a.get('score', 0):.2f}] {a.get('question')}\n    {said}")
            for other in a.get("alternatives", []) if a.get("unsure") else []:
                lines.append(
                    f"    unsure: or [{other.get('entry')} · {other.get('score', 0):.2f}] {other.get('answer')}"
                )
        return "\n".join(lines)
    if task == "chat":
        return str(result.get("reply", ""))
    if task == "qa":
        span = f"chars {result.get('start')}–{result.get('end')}"
        return f"answer: {result.get('answer')!r} ({span}, score {result.get('score') or 0:.3f})"
    if task == "classify":
        return f"label: {result.get('label')} ({result.get('score', 0):.3f})"
    if task == "embed":
        vector = result.get("embedding") or []
        head = ", ".join(f"{x:.4f}" for x in vector[:4])
        return f"embedding: {result.get('dim', len(vector))} dims [{head}, …] from {result.get('tokens')} tokens"
    return orjson.dumps(result).decode()


def cmd_heldout(args: argparse.Namespace) -> int:
    from pipeline.tools.quality import evaluation as ev

    settings = settings_from(args)
    tuning, test = ev.load_sets()
    name = "tuning set" if args.tuning else "held-out test set"
    test = tuning if args.tuning else test
    messages = ev.two_question_messages(test)
    with _answerer(args, settings, lang="en") as answer:
        single, pairs = ev.evaluate(test, answer), ev.evaluate_pairs(messages, answer)
        _print_reports(name, single, pairs)
        if not args.tuning:
            # Issue 22's set, written before that issue's retrieval changes: reported beside, never tuned on.
            items, written = ev.load_heldout2()
            _print_reports("held-out set 2 (faq_eval_heldout2.json)", ev.evaluate(items, answer),
                           ev.evaluate_pairs(written, answer), "faq_eval_heldout2_messages.json")  # fmt: skip
        if args.tuning and args.offline:
            followups = ev.evaluate_pairs(ev.load_followups(), answer)
            for miss in followups.misses:
                print(f"  miss    {miss}")
            print(f"faq top-1 on follow-up messages (tuning): {followups.hits}/{followups.total}"
                  f" = {followups.top1:.3f}")  # fmt: skip
    return 0


@contextlib.contextmanager
def _answerer(args: argparse.Namespace, settings: Any, lang: str | None) -> Iterator[Any]:
    """Answers from this process's stage cores (``--offline``) or from the running pipeline."""
    from pipeline.client import Client
    from pipeline.tools.quality import evaluation as ev

    if args.offline:
        yield ev.offline_answerer(settings, lang=lang)
        return
    with Client(settings) as client:

        def answer(texts: Any) -> list[dict[str, Any]]:
            fields = {"lang": lang} if lang else {}
            futures = [client.send({"task": "faq", "text": t} | fields, timeout_ms=int(args.timeout * 1000))
                       for t in texts]  # fmt: skip
            client.flush()
            return [(client.wait(f, args.timeout).result or {}) for f in futures]

        yield answer


def _print_reports(name: str, single: Any, pairs: Any, pairs_from: str = "") -> None:
    for miss in single.misses + pairs.misses:
        print(f"  miss    {miss}")
    print(
        f"faq top-1 on the {name}: {single.hits}/{single.total} = {single.top1:.3f}; "
        f"unsure on {single.unsure} ({single.unsure / max(single.total, 1):.0%}); "
        f"of the {single.answered_misses} misses that got an entry it flagged {single.unsure_on_misses} "
        f"and offered the right one in {single.offered_on_misses}"
    )
    source = f" ({pairs_from})" if pairs_from else ""
    print(f"faq top-1 on two-question messages{source}: {pairs.hits}/{pairs.total} = {pairs.top1:.3f}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.tools.quality import calibration as cal
    from pipeline.tools.quality import evaluation as ev

    tuning, _ = ev.load_sets()  # the test set is never read here
    signals, expected, _ = cal.tuning_signals(settings_from(args), tuning)
    choice = cal.calibrate(signals, expected)
    margin = cal.unsure_margin(signals.fuse(choice.weights), choice.threshold)
    for name, value in cal.calibrated_settings(choice).items():
        print(f"PIPELINE_{name.upper()}={value:g}")
    print(f"PIPELINE_FAQ_UNSURE_MARGIN={margin:g}")
    print(
        f"tuning top-1 {choice.top1:.3f} on {len(tuning)} questions; "
        f"5-fold cross-validated {cal.cross_validate(signals, expected):.3f}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.chat:
        return chat_eval.cmd_chat_eval(args)
    if args.calibrate:
        return cmd_calibrate(args)
    if args.heldout:
        return cmd_heldout(args)
    from pathlib import Path

    from pipeline.client import Client
    from pipeline.settings import PROJECT_ROOT
    from pipeline.tasks.faq.kb import load_eval

    path = Path(args.file) if args.file else PROJECT_ROOT / "pipeline" / "data" / "faq_eval.json"
    items = load_eval(path)
    settings = settings_from(args)
    if args.offline:
        return _eval_offline(items, settings)
    began = time.monotonic()
    with Client(settings) as client:
        futures = [client.send({"task": "faq", "text": q}, timeout_ms=int(args.timeout * 1000)) for q, _ in items]
        client.flush()
        answers = [client.wait(f, args.timeout) for f in futures]
    hits, errors = 0, 0
    for (question, expect), answer in zip(items, answers, strict=True):
        if not answer.ok or answer.result is None:
            errors += 1
            print(f"  error   {question!r}: {answer.error}")
            continue
        got = answer.result["answers"][0]["entry"] if answer.result.get("answers") else None
        if got == expect:
            hits += 1
        else:
            print(f"  miss    {question!r}: expected {expect}, got {got}")
    elapsed = time.monotonic() - began
    print(
        f"faq top-1 accuracy through the pipeline: {hits}/{len(items)} = {hits / len(items):.3f}"
        f" ({errors} errors, {elapsed:.1f} s, {len(items) / elapsed:.1f} requests/s)"
    )
    return 0 if errors == 0 else 1


def _eval_offline(items: list[tuple[str, str]], settings: Any) -> int:
    """``eval --file F --offline``: the same top-1 from this process's stage cores, the language detected."""
    from pipeline.tools.quality import evaluation as ev

    report = ev.evaluate(items, ev.offline_answerer(settings, lang=None))
    for miss in report.misses:
        print(f"  miss    {miss}")
    print(f"faq top-1 accuracy in process: {report.hits}/{report.total} = {report.top1:.3f}")
    return 0
