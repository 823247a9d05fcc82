"""``pipeline replay``: recorded requests through a candidate pipeline with changed settings; a rollout gate.

Exit codes: 0 the candidate is within the margins, 3 it is worse (each
reason printed), 1 the replay itself failed (no requests in the range, the
candidate did not come up). How it works: :mod:`pipeline.tools.replay.run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.commands.redrive import parse_time
from pipeline.errors import ConfigError

WORSE = 3


def register(sub: Any) -> None:
    replay = sub.add_parser("replay", help="replay recorded requests through a candidate pipeline and compare")
    replay.add_argument("--since", help="recorded at or after: ISO time or an age like 30m, 2h, 1d")
    replay.add_argument("--until", help="recorded before: ISO time or an age (default: now)")
    replay.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="changes",
                        help="a setting the candidate runs with: PIPELINE_FAQ_MIN_SCORE=0.5 (repeatable)")  # fmt: skip
    replay.add_argument("--limit", type=int, help="replay at most this many requests (the earliest)")
    replay.add_argument("--speed", type=float, default=1.0,
                        help="pace: 1 as recorded, 2 twice as fast, 0 as fast as the candidate takes them")  # fmt: skip
    replay.add_argument("--generate", type=int, default=0, help="generate members for chat requests (0: none)")
    replay.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the candidate's answers")
    replay.add_argument("--margin", type=float, default=0.02,
                        help="how much worse matched, errors, grounded may be (absolute; 0.02: 2 points)")  # fmt: skip
    replay.add_argument("--latency-margin", type=float,
                        help="p99 latency may grow by this share (0.5: 1.5x); not gated unless given")  # fmt: skip
    replay.add_argument("--cost-margin", type=float, help="cost per answer may grow by this share; off unless given")
    replay.add_argument("--min-agreement", type=float, help="least share of unchanged answers; off unless given")
    replay.add_argument("--json", type=Path, help="also write the comparison here")
    replay.add_argument("--from-json", type=Path,
                        help="judge the comparison an earlier --json wrote with these margins; no replay")  # fmt: skip
    add_cluster_args(replay)
    replay.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from pipeline.tools.replay.compare import Comparison, Margins, gate, table

    margins = Margins(share=args.margin, latency=args.latency_margin, cost=args.cost_margin,
                      min_agreement=args.min_agreement)  # fmt: skip
    if args.from_json is not None:
        comparison = Comparison.from_json(json.loads(args.from_json.read_text()))
        changes: dict[str, str] = {}
    else:
        from pipeline.tools.replay.run import replay

        changes = dict(_change(text) for text in args.changes)
        if not changes:
            raise ConfigError("--set NAME=VALUE: a replay compares a candidate with at least one setting changed")
        now = time.time()
        since = parse_time(args.since, now)
        if since is None:
            raise ConfigError("--since: which recorded requests to replay (e.g. --since 1h)")
        done = replay(settings_from(args), changes, since, parse_time(args.until, now), limit=args.limit,
                      speed=args.speed, generate=args.generate, timeout_s=args.timeout,
                      say=lambda line: print(line, file=sys.stderr))  # fmt: skip
        comparison = done.comparison
        print(f"candidate {done.candidate_prefix} with {', '.join(f'{k}={v}' for k, v in changes.items())}: "
              f"{done.replayed} requests replayed in {done.seconds:.0f} s")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**comparison.to_json(), "changes": changes}, indent=2))
    print(table(comparison))
    for example in comparison.changed:
        print(f"changed: {example['id']}: {example['recorded']['says']} -> {example['candidate']['says']}")
    reasons = gate(comparison, margins)
    for reason in reasons:
        print(f"worse: {reason}")
    print("verdict: " + ("candidate is worse than the margins allow" if reasons else "candidate within the margins"))
    return WORSE if reasons else 0


def _change(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--set {text!r}: expected NAME=VALUE, e.g. PIPELINE_FAQ_MIN_SCORE=0.5")
    return name.strip(), value.strip()
