"""Flags every command shares, and the one way a command turns them into Settings."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.settings import Settings


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (PIPELINE_BOOTSTRAP_SERVERS; default 127.0.0.1:9092)"
    )
    parser.add_argument("--prefix", help="topic and group name prefix (PIPELINE_PREFIX)")


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the environment, overridden by whichever shared flags were given."""
    given = {
        "bootstrap_servers": getattr(args, "bootstrap_servers", None),
        "prefix": getattr(args, "prefix", None),
    }
    given.update(overrides)
    return Settings.from_env(**given)
