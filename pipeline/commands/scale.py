"""``pipeline scale STAGE=N ...``: change the members of a running ``pipeline up``, leaving the other stages alone."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.settings import PROJECT_ROOT


def register(sub: Any) -> None:
    scale = sub.add_parser(
        "scale",
        help="change a running `pipeline up`'s members of a stage: pipeline scale infer=3",
        description="Start or retire members of the named stages of the `pipeline up` that logs to --log-dir. "
        "The other members keep running; the group rebalances cooperatively, so only the partitions that move "
        "pause. More members than the stage's source topic has partitions are refused.",
    )
    scale.add_argument("counts", nargs="+", metavar="STAGE=N", help="the number of members a stage should have")
    scale.add_argument("--log-dir", default=str(PROJECT_ROOT / ".cache" / "logs"), help="the `pipeline up`'s log dir")
    scale.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for `pipeline up` to answer")
    add_cluster_args(scale)
    scale.set_defaults(func=cmd_scale)


def cmd_scale(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.local.control import check_counts, parse_counts, partitions_of, request_scale

    settings = settings_from(args)
    counts = parse_counts(args.counts)
    check_counts(counts, partitions_of(settings))  # refuse here already, with the limit named
    state = request_scale(PROJECT_ROOT / Path(args.log_dir), counts, args.timeout)
    for stage, count in counts.items():
        names = [m["name"] for m in state["members"] if m["stage"] == stage and not m["retiring"]]
        retiring = [m["name"] for m in state["members"] if m["stage"] == stage and m["retiring"]]
        more = f"; stopping {', '.join(retiring)}" if retiring else ""
        print(f"{stage}: {count} member(s): {', '.join(names) or 'none'}{more}")
    return 0
