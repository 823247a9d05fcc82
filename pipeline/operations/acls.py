"""Least-privilege ACLs: the map (pipeline/flow.py) and ``topics/acls/principals.toml`` made into bindings.

Pure: reads the declaration and returns frozen :class:`Acl` bindings with
cluster-side names (the prefix added); :mod:`pipeline.operations.apply_acls` makes a
cluster's ACLs match them. The declaration file says what the rules are; in
short, a stage reads its source and its own group, writes its sinks and uses
its own transactional-id prefix, and nothing else; a stage that watches the
queues of later stages (filter's shedding probe) may also read their sources
and describe their groups.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.flow import STAGE_NAMES, STAGES, Stage
from pipeline.settings import Settings
from pipeline.telemetry import TOPIC as TELEMETRY
from pipeline.topics import load_topics

RESOURCES = ("topic", "group", "transactional_id")
OPERATIONS = ("read", "write", "describe", "create", "describe_configs")
_STAGE_KEYS = frozenset({"writes", "reads", "watches"})
_PRINCIPAL_KEYS = frozenset({"does", "writes", "reads", "stage_sources", "stage_groups", "own_group", "own_topics"})


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: ``principal`` may ``operation`` the ``resource`` named ``name`` (or starting with it)."""

    principal: str  # "User:split"
    resource: str  # topic, group or transactional_id
    name: str  # the cluster-side name (prefix included)
    prefixed: bool  # name is a prefix: every resource whose name starts with it
    operation: str  # one of OPERATIONS
    why: str = field(default="", compare=False)

    def __str__(self) -> str:
        pattern = f"{self.name}*" if self.prefixed else self.name
        return f"{self.principal} {self.operation.upper()} {self.resource} {pattern}"


@dataclass(frozen=True)
class Principal:
    """A principal that is not a stage, as declared."""

    role: str
    does: str
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    stage_sources: str | None = None  # an operation on every stage's source topic
    stage_groups: str | None = None  # an operation on every stage's group
    own_group: str | None = None  # an operation on the group named like the principal ({prefix}role)
    own_topics: tuple[str, ...] = ()  # operations on every topic starting "{prefix}role-" (its app's own)


@dataclass(frozen=True)
class AclDeclaration:
    extra_writes: dict[str, tuple[str, ...]]  # stage -> topics beyond its sinks
    extra_reads: dict[str, tuple[str, ...]]
    watches: dict[str, tuple[str, ...]]  # stage -> the stages whose queues it reads (committed offsets, heads)
    principals: tuple[Principal, ...]
    source: Path


def acls_file(settings: Settings) -> Path:
    return settings.kafka.topics_dir / "acls" / "principals.toml"


def load_acls(settings: Settings) -> AclDeclaration:
    """Read and check ``topics/acls/principals.toml``; every topic it names must be declared."""
    path = acls_file(settings)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the ACL declaration: {exc}", where=str(path)) from exc
    declared = set(load_topics(settings))

    def fail(message: str) -> ConfigError:
        return ConfigError(message, where=str(path))

    def topics(value: Any, what: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise fail(f"{what} must be a list of topic names")
        unknown = sorted(set(value) - declared)
        if unknown:
            raise fail(f"{what} names topics that topics/ does not declare: {unknown}")
        return tuple(value)

    def operation(value: Any, what: str) -> str | None:
        if value is None:
            return None
        if value not in OPERATIONS:
            raise fail(f"{what} = {value!r}: use one of {list(OPERATIONS)}")
        return str(value)

    def operations(value: Any, what: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise fail(f"{what} must be a list of operations: {list(OPERATIONS)}")
        return tuple(str(operation(v, what)) for v in value)

    unknown = sorted(set(data) - {"stages", "principals"})
    if unknown:
        raise fail(f"unknown tables {unknown}; the file has [stages.NAME] and [principals.NAME]")
    writes: dict[str, tuple[str, ...]] = {}
    reads: dict[str, tuple[str, ...]] = {}
    watches: dict[str, tuple[str, ...]] = {}
    for name, table in data.get("stages", {}).items():
        if name not in STAGE_NAMES:
            raise fail(f"[stages.{name}]: no such stage; stages: {', '.join(STAGE_NAMES)}")
        bad = sorted(set(table) - _STAGE_KEYS)
        if bad:
            raise fail(f"[stages.{name}]: unknown keys {bad}; a stage may have {sorted(_STAGE_KEYS)}")
        writes[name] = topics(table.get("writes", []), f"[stages.{name}] writes")
        reads[name] = topics(table.get("reads", []), f"[stages.{name}] reads")
        watched = table.get("watches", [])
        if not isinstance(watched, list) or not set(watched) <= set(STAGE_NAMES) or name in watched:
            raise fail(f"[stages.{name}] watches must list other stages: {', '.join(STAGE_NAMES)}")
        watches[name] = tuple(watched)
    principals = []
    for role, table in data.get("principals", {}).items():
        if role in STAGE_NAMES or role == "admin":
            raise fail(f"[principals.{role}]: {role} is a stage or the admin, not a principal to declare here")
        bad = sorted(set(table) - _PRINCIPAL_KEYS)
        if bad:
            raise fail(f"[principals.{role}]: unknown keys {bad}; a principal may have {sorted(_PRINCIPAL_KEYS)}")
        if not isinstance(table.get("does"), str) or not table["does"].strip():
            raise fail(f"[principals.{role}]: does must say what this principal is for")
        principals.append(
            Principal(
                role=role,
                does=table["does"],
                writes=topics(table.get("writes", []), f"[principals.{role}] writes"),
                reads=topics(table.get("reads", []), f"[principals.{role}] reads"),
                stage_sources=operation(table.get("stage_sources"), f"[principals.{role}] stage_sources"),
                stage_groups=operation(table.get("stage_groups"), f"[principals.{role}] stage_groups"),
                own_group=operation(table.get("own_group"), f"[principals.{role}] own_group"),
                own_topics=operations(table.get("own_topics", []), f"[principals.{role}] own_topics"),
            )
        )
    return AclDeclaration(writes, reads, watches, tuple(principals), path)


def roles(settings: Settings) -> tuple[str, ...]:
    """Every principal the declarations make, by role: the stages, then the declared principals."""
    return (*STAGE_NAMES, *(p.role for p in load_acls(settings).principals))


def bindings(settings: Settings) -> list[Acl]:
    """Every ACL the pipeline needs under ``settings.kafka.prefix``, sorted, without duplicates."""
    declaration = load_acls(settings)
    acls: set[Acl] = set()
    for stage in STAGES:
        acls.update(stage_acls(settings, stage, declaration))
    for principal in declaration.principals:
        acls.update(principal_acls(settings, principal))
    return sorted(acls)


def stage_acls(settings: Settings, stage: Stage, declaration: AclDeclaration) -> Iterable[Acl]:
    """What one stage's members need: its source, sinks, group and transactional ids."""
    who = f"User:{settings.principal(stage.name)}"
    group = settings.group(stage.name)
    reads = {stage.source: "its source"}
    if stage.follows:
        reads[stage.follows] = "followed whole into the stage"
    if stage.changelog:
        reads[stage.changelog] = "its changelog, restored on assignment"
    reads.update({t: "declared in topics/acls" for t in declaration.extra_reads.get(stage.name, ())})
    writes = {t: "a sink" for t in stage.sinks}
    # Every member's runner reports to the monitor (pipeline/runtime/telemetry.py), outside transactions.
    writes[TELEMETRY] = "its members' telemetry reports, for the monitor"
    writes.update({t: "declared in topics/acls" for t in declaration.extra_writes.get(stage.name, ())})
    watched = [s for s in STAGES if s.name in declaration.watches.get(stage.name, ())]
    for other in watched:
        # READ: the head record's timestamp is fetched (and READ implies DESCRIBE: metadata, end offsets).
        reads.setdefault(other.source, f"the queue of {other.name}: end offsets and its oldest waiting record")
    for topic, why in reads.items():
        yield Acl(who, "topic", settings.topic(topic), False, "read", why)
    for topic, why in writes.items():
        yield Acl(who, "topic", settings.topic(topic), False, "write", why)
    yield Acl(who, "group", group, False, "read", "its consumer group: join, fetch and commit offsets")
    for other in watched:
        # DESCRIBE is what OffsetFetch asks of a group: read its committed offsets, nothing more.
        why = f"the committed offsets of {other.name}, where its queue starts"
        yield Acl(who, "group", settings.group(other.name), False, "describe", why)
    if stage.changelog:
        yield Acl(who, "group", f"{group}-restore", False, "read", "the changelog restorer's group id")
    # Members' transactional ids are "{group}-{member}" (Settings.client_id).
    yield Acl(who, "transactional_id", f"{group}-", True, "write", "its members' transactional ids")


def principal_acls(settings: Settings, principal: Principal) -> Iterable[Acl]:
    who = f"User:{settings.principal(principal.role)}"
    for topic in principal.reads:
        yield Acl(who, "topic", settings.topic(topic), False, "read", principal.does)
    for topic in principal.writes:
        yield Acl(who, "topic", settings.topic(topic), False, "write", principal.does)
    for stage in STAGES:
        if principal.stage_sources:
            yield Acl(who, "topic", settings.topic(stage.source), False, principal.stage_sources, principal.does)
        if principal.stage_groups:
            yield Acl(who, "group", settings.group(stage.name), False, principal.stage_groups, principal.does)
    if principal.own_group:
        yield Acl(who, "group", settings.group(principal.role), False, principal.own_group, "its own consumer group")
    for op in principal.own_topics:
        # PREFIXED: the topics an app makes for itself, named after its group (faust's changelogs).
        yield Acl(who, "topic", f"{settings.group(principal.role)}-", True, op, "the topics its app makes for itself")
