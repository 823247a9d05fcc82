"""``pipeline chat``: a conversation with the running pipeline, the reply printed as it is written."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from


def register(sub: Any) -> None:
    chat = sub.add_parser("chat", help="talk to the running pipeline's chat task (one session; Ctrl-D ends it)")
    chat.add_argument("--session", help="continue this conversation (default: a new one)")
    chat.add_argument("--max-tokens", type=int, help="at most this many new tokens per reply")
    chat.add_argument("--timeout", type=float, default=60.0, help="seconds: each message's deadline")
    add_cluster_args(chat)
    chat.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from pipeline.client import Client
    from pipeline.commands.ask import print_streamed, reply_stats

    session = args.session or f"chat-{uuid.uuid4().hex[:8]}"
    print(f"session {session}: type a message, Enter sends it; Ctrl-D ends.", file=sys.stderr)
    with Client(settings_from(args)) as client:
        while True:
            try:
                text = input("» ").strip()
            except EOFError:
                print()
                return 0
            if not text:
                continue
            request: dict[str, Any] = {"task": "chat", "text": text, "session": session}
            if args.max_tokens:
                request["max_tokens"] = args.max_tokens
            answer = print_streamed(client.stream(request, timeout_s=args.timeout))
            print(reply_stats(answer))
