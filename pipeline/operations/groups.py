"""Consumer-group membership, for readiness checks and operators."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka.admin import AdminClient

from pipeline.runtime.config import admin_config
from pipeline.settings import Settings


def group_members(settings: Settings, stages: Iterable[str]) -> dict[str, int]:
    """How many members each stage's consumer group has right now (0 if none)."""
    groups = {settings.group(stage): stage for stage in stages}
    admin = AdminClient(admin_config(settings))
    counts = dict.fromkeys(groups.values(), 0)
    futures = admin.describe_consumer_groups(list(groups), request_timeout=10)
    for group, future in futures.items():
        try:
            description = future.result()
        except Exception:  # an unknown group is simply not there yet
            continue
        counts[groups[group]] = len(description.members)
    return counts
