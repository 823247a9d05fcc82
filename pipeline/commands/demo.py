"""``pipeline demo``: the main job in one command.

Starts the broker (if local), applies the topics, exports the model, runs
every stage as its own process, sends a few customer-service messages (one
asking several things at once) and one broken request, prints each answer
with where its time went, holds a two-turn conversation with the chat task
(the replies streaming), and shuts everything down.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
import uuid
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.settings import PROJECT_ROOT

MESSAGES: tuple[str, ...] = (
    "How do I reset my password?",
    "How do I reset my password? And can I change my delivery address?",
    "My parcel hasn't arrived yet, where is it?",
    "Can I return shoes that don't fit? How long does the refund take?",
    "Do you ship to Canada?",
    # Chinese, two questions: routed by language to multilingual-e5-small and the Chinese shop.
    "我的快递到哪了？还有，退款多久能到账？",
)
BAD_REQUEST = b'{"id": "demo-bad", "task": "faq", "text": '  # cut off: not valid JSON
# A conversation with the chat task: the follow-up only makes sense with the first turn.
CHAT: tuple[str, ...] = ("Can I return shoes that don't fit?", "And how long does the refund take?")


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="start everything, ask a few customer-service questions, stop")
    demo.add_argument("--infer", type=int, default=1, metavar="N", help="infer members (default 1)")
    add_cluster_args(demo)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.client import Client
    from pipeline.commands.ask import render
    from pipeline.flow import STAGE_NAMES
    from pipeline.local.cluster import prepare, wait_ready
    from pipeline.local.supervisor import Supervisor

    settings = settings_from(args)
    # The demo prints what a user asked and got; the supervisor's bookkeeping stays in the logs.
    logging.getLogger("pipeline").setLevel(logging.WARNING)
    started_broker = prepare(settings)
    counts = {stage: (args.infer if stage == "infer" else 1) for stage in STAGE_NAMES}
    supervisor = Supervisor(counts, settings, PROJECT_ROOT / ".cache" / "logs")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    supervisor.start()
    failures = 0
    try:
        if not wait_ready(settings, counts, stop, on_wait=supervisor.check, turning=supervisor.turning):
            print(f"the pipeline did not come up; see the logs in {supervisor.log_dir}")
            return 1
        with Client(settings) as client:
            print()
            for text in MESSAGES:
                answer = client.ask({"task": "faq", "text": text}, timeout_s=30)
                failures += not answer.ok
                print(render(answer, asked=text))
                print()
            bad = client.send_raw("demo-bad", BAD_REQUEST)
            client.flush()
            answer = client.wait(bad, 30)
            print(render(answer, asked=f"(a broken request: {BAD_REQUEST.decode()!r})"))
            failures += answer.ok  # this one must be rejected
            print()
            if settings.chat.chat_model:
                failures += chat(client)
        time.sleep(0.1)
    finally:
        print("stopping the pipeline ...")
        supervisor.stop()
        if started_broker:
            from pipeline.local import broker

            print("stopping the Kafka broker the demo started ...")
            broker.stop(settings)
    return 1 if failures else 0


def chat(client: Any) -> int:
    """A two-turn conversation, each reply printed as it streams; the number of failed turns."""
    from pipeline.commands.ask import print_streamed, reply_stats

    session = f"demo-{uuid.uuid4().hex[:6]}"
    print(f"a conversation with the chat task (session {session}); the replies stream:")
    failed = 0
    for text in CHAT:
        print(f"» {text}\n  ", end="", flush=True)
        answer = print_streamed(client.stream({"task": "chat", "text": text, "session": session}, timeout_s=120))
        print(reply_stats(answer))
        print()
        failed += not answer.ok
    return failed
