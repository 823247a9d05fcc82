"""Bring a local pipeline up: broker, topics and models first, then wait for every stage's members."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pipeline.catalog import TASK_NAMES
from pipeline.settings import Settings


def prepare(settings: Settings, say: Any = print) -> bool:
    """Everything the stages need before they start: broker, topics, exported models.

    Returns whether it started the local broker (so a caller can stop it again).
    """
    from pipeline.local import broker
    from pipeline.models.export import ensure_exported
    from pipeline.operations.admin import apply_topics
    from pipeline.tasks.language import task_routes

    started = False
    if settings.kafka.bootstrap_servers == broker.address(settings):
        # Any broker answering there will do (ours, or one started elsewhere).
        status = broker.status(settings)
        if not status.up:
            status = broker.start(settings, say=say)
            started = not status.already_running
        say(f"Kafka {'started' if started else 'was already running'} at {status.address}")
    report = apply_topics(settings)
    say(f"topics: {report.summary()}")
    if settings.sasl:
        secure_principals(settings, say)
    for task in TASK_NAMES:
        # faq may have a second (multilingual) model, routed by language.
        models = {routed.model_for(task) for routed in task_routes(task, settings).values()} - {""}
        for model in sorted(models):
            exported = ensure_exported(model, task, settings)
            say(f"model for {task}: {exported.path}")
    if settings.chat.chat_model and not settings.chat.chat_engine:
        from pipeline.models.chat_engine import ensure_decoder

        say(f"reply model for chat: {ensure_decoder(settings.chat.chat_model, settings.models.model_cache_dir)}")
    return started


def wait_ready(
    settings: Settings,
    counts: dict[str, int],
    stop: threading.Event,
    timeout_s: float = 180.0,
    on_wait: Any = None,
    turning: Any = None,
) -> bool:
    """Wait until every stage's consumer group has its members (and ``turning()``, when given, says the
    processes started for them have turned their loops); say so."""
    from pipeline.operations.groups import group_members

    began = time.monotonic()
    while not stop.is_set() and time.monotonic() - began < timeout_s:
        members = group_members(settings, counts)
        if all(members[stage] >= n for stage, n in counts.items()) and (turning is None or turning()):
            print(
                f"pipeline ready in {time.monotonic() - began:.1f} s: " + ", ".join(f"{s} {members[s]}" for s in counts)
            )
            return True
        if on_wait is not None:
            on_wait()
        stop.wait(1.0)
    return False


def secure_principals(settings: Settings, say: Any = print, users_dir: Path | None = None) -> None:
    """On a secured cluster: every principal's ACLs, and SCRAM users for those that have none.

    Users are made on the local secure broker (passwords in its ``secrets/``)
    or when ``users_dir`` names a folder of password files, one per user
    (docker compose); a managed cluster makes its users itself.
    """
    from pipeline.local import broker
    from pipeline.local.secure import tls_files
    from pipeline.local.tls import password_in
    from pipeline.operations.acls import roles
    from pipeline.operations.apply_acls import apply_acls, ensure_users

    if (
        users_dir is None
        and settings.broker.kafka_secure
        and settings.kafka.bootstrap_servers == broker.address(settings)
    ):
        users_dir = tls_files(settings).secrets
    if users_dir is not None:
        folder = users_dir
        users = [settings.principal(role) for role in roles(settings)]
        made = ensure_users(settings, users, lambda user: password_in(folder, user))
        if made:
            say(f"SCRAM users made: {', '.join(made)} (passwords in {users_dir})")
    say(f"ACLs: {apply_acls(settings).summary()}")
