"""``pipeline topics apply|list``: the topics declared under topics/ against a cluster."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.commands.common import add_cluster_args, settings_from
from pipeline.operations.admin import apply_topics, list_topics
from pipeline.settings import Settings


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("topics", help="create or compare the topics declared under topics/")
    commands = group.add_subparsers(dest="topics_command", required=True, metavar="ACTION")

    apply = commands.add_parser(
        "apply", help="create missing topics, add partitions, set configs to the declarations; idempotent"
    )
    _add_cluster_flags(apply)
    apply.add_argument(
        "--no-acls",
        action="store_true",
        help="leave ACLs alone (they are applied when PIPELINE_SECURITY_PROTOCOL is SASL_*: topics/acls/)",
    )
    apply.add_argument(
        "--users",
        type=Path,
        metavar="DIR",
        help="also give every principal without one a SCRAM user, its password in DIR/<user> (docker compose)",
    )
    apply.set_defaults(func=_apply)

    acls = commands.add_parser("acls", help="show the ACLs each principal gets from the map and topics/acls/")
    _add_cluster_flags(acls)
    acls.set_defaults(func=_acls)

    listing = commands.add_parser("list", help="show declared against actual partitions and configs")
    _add_cluster_flags(listing)
    listing.add_argument("--check", action="store_true", help="exit 1 unless every topic matches its declaration")
    listing.set_defaults(func=_list)


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    add_cluster_args(parser)
    parser.add_argument("--topics-dir", type=Path, help="declarations folder (PIPELINE_TOPICS_DIR; default topics/)")


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from(args, topics_dir=args.topics_dir)


def _apply(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"topics: applying {settings.kafka.topics_dir} to {settings.kafka.bootstrap_servers}", flush=True)
    report = apply_topics(settings)
    rows: list[tuple[str, ...]] = []
    for topic in report.topics:
        lines = [*topic.changes, *(f"WARNING: {w}" for w in topic.warnings)] or ["unchanged"]
        rows += [(topic.topic if i == 0 else "", line) for i, line in enumerate(lines)]
    print(_table(("TOPIC", "CHANGE"), rows))
    print(f"topics: {report.summary()}")
    if settings.sasl and not args.no_acls:
        from pipeline.local.cluster import secure_principals

        secure_principals(settings, say=lambda line: print(f"topics: {line}"), users_dir=args.users)
    return 0


def _acls(args: argparse.Namespace) -> int:
    from pipeline.operations.acls import bindings

    settings = _settings(args)
    rows = [
        (acl.principal, acl.operation.upper(), acl.resource, f"{acl.name}*" if acl.prefixed else acl.name, acl.why)
        for acl in bindings(settings)
    ]
    print(_table(("PRINCIPAL", "OPERATION", "RESOURCE", "NAME", "WHY"), rows))
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    states = list_topics(settings)
    rows = []
    for state in states:
        actual = "-" if state.partitions is None else str(state.partitions)
        rows.append((state.spec.topic, str(state.spec.partitions), actual, state.status, state.spec.carries))
        rows += [
            ("", "", "", f"{key}: declared {want}, actual {have}", "")
            for key, (want, have) in state.config_diff.items()
        ]
        rows += [("", "", "", f"{key}: {value} set but not declared", "") for key, value in state.extra_config.items()]
    print(f"topics at {settings.kafka.bootstrap_servers}, declared in {settings.kafka.topics_dir}:")
    print(_table(("TOPIC", "DECLARED", "ACTUAL", "STATUS", "CARRIES"), rows))
    # More partitions than declared works and cannot be undone, so it passes the check.
    if args.check and any(s.status not in ("ok", "more partitions") for s in states):
        print("topics: not as declared; run `pipeline topics apply`")
        return 1
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns; the last one is not padded so long text just runs on."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in [header, *rows]
    )
