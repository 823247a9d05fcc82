"""``pipeline redrive``: replay dead letters to ``requests`` once their cause is fixed.

What is replayed and what is skipped (parts and results hold no request) is
explained in :mod:`pipeline.operations.redrive`.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.errors import ConfigError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: Any) -> None:
    redrive = sub.add_parser("redrive", help="replay dead letters to requests (after fixing their cause)")
    redrive.add_argument("--stage", action="append", default=[], help="only letters this stage rejected (repeatable)")
    redrive.add_argument("--code", action="append", default=[], help="only letters with this error code (repeatable)")
    redrive.add_argument("--since", help="dead-lettered at or after: ISO time or an age like 30m, 2h, 1d")
    redrive.add_argument("--until", help="dead-lettered before: ISO time or an age like 10m")
    redrive.add_argument("--timeout-ms", type=int, default=30_000, help="the replayed request's new deadline (30000)")
    redrive.add_argument("--dry-run", action="store_true", help="list what would be replayed; send nothing")
    add_cluster_args(redrive)
    redrive.set_defaults(func=cmd_redrive)


def parse_time(text: str | None, now: float) -> int | None:
    """Epoch ms from an ISO time or an age (``30m`` = thirty minutes ago)."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        return int((now - float(match[1]) * _UNITS[match[2]]) * 1000)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is neither an ISO time nor an age like 30m, 2h, 1d") from exc


def cmd_redrive(args: argparse.Namespace) -> int:
    from pipeline.operations.redrive import load_dead_letters, redrive, select

    settings = settings_from(args)
    now = time.time()
    letters = select(
        load_dead_letters(settings),
        stages=args.stage,
        codes=args.code,
        since_ms=parse_time(args.since, now),
        until_ms=parse_time(args.until, now),
    )
    replay = [d for d in letters if d.replayable]
    for letter in letters:
        at = datetime.fromtimestamp(letter.timestamp_ms / 1000).isoformat(timespec="seconds")
        key = (letter.key or b"").decode("utf-8", "replace")[:40] or "(no key)"
        action = "replay" if letter.replayable else f"skip: {letter.skip_reason}"
        print(f"{at} {letter.where} {letter.stage}/{letter.code} key={key} {letter.reason[:80]!r} -> {action}")
    skipped = len(letters) - len(replay)
    if args.dry_run:
        print(f"dry run: would replay {len(replay)} to {settings.topic('requests')}, skip {skipped}")
        return 0
    sent = redrive(settings, replay, timeout_ms=args.timeout_ms)
    print(f"replayed {sent} to {settings.topic('requests')}, skipped {skipped}")
    return 0
