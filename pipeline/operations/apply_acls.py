"""Make a cluster's ACLs and SCRAM users match the declarations (pipeline/operations/acls.py).

:func:`apply_acls` is idempotent like :func:`pipeline.operations.admin.apply_topics`:
it creates the bindings that are missing and deletes the bindings of the
pipeline's own principals that are no longer declared (so a right taken out
of the map is taken off the cluster too). Bindings of other principals are
never touched. :func:`ensure_users` adds SCRAM credentials for principals
that have none (the local secure broker; a managed cluster makes its users
itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from pipeline.errors import AuthenticationError, BrokerError
from pipeline.operations.acls import Acl, bindings, roles
from pipeline.operations.admin import TIMEOUT_S, _admin, _reason, _wait, check_broker
from pipeline.settings import Settings

log = logging.getLogger("pipeline.kafka.acls")

_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}
_OPERATION = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "describe": AclOperation.DESCRIBE,
    "create": AclOperation.CREATE,
    "describe_configs": AclOperation.DESCRIBE_CONFIGS,
}
SCRAM_ITERATIONS = 8192  # Kafka's default for SCRAM-SHA-512 credentials (kafka-configs)
_MECHANISM = {"SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512, "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256}


@dataclass(frozen=True)
class AclReport:
    created: tuple[str, ...]
    deleted: tuple[str, ...]
    unchanged: int

    def summary(self) -> str:
        return f"{len(self.created)} created, {len(self.deleted)} deleted, {self.unchanged} unchanged"


def to_binding(acl: Acl) -> AclBinding:
    pattern = ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL
    operation, allow = _OPERATION[acl.operation], AclPermissionType.ALLOW
    return AclBinding(_RESOURCE[acl.resource], acl.name, pattern, acl.principal, "*", operation, allow)


def apply_acls(settings: Settings) -> AclReport:
    """Create the declared bindings that are missing; delete undeclared ones of the pipeline's principals."""
    wanted = {to_binding(acl): acl for acl in bindings(settings)}
    ours = {f"User:{settings.principal(role)}" for role in roles(settings)}
    admin = _admin(settings)
    existing = [b for b in _describe(admin) if b.principal in ours]
    missing = [b for b in wanted if b not in existing]
    stale = [b for b in existing if b not in wanted]
    if missing:
        _wait(admin.create_acls(missing, request_timeout=TIMEOUT_S), "create ACL")
    if stale:
        _wait(admin.delete_acls([_exact(b) for b in stale], request_timeout=TIMEOUT_S), "delete ACL")
    return AclReport(
        created=tuple(str(wanted[b]) for b in missing),
        deleted=tuple(_describe_binding(b) for b in stale),
        unchanged=len(wanted) - len(missing),
    )


def list_acls(settings: Settings) -> list[AclBinding]:
    """The bindings the cluster has for the pipeline's principals."""
    ours = {f"User:{settings.principal(role)}" for role in roles(settings)}
    return [b for b in _describe(_admin(settings)) if b.principal in ours]


def remove_principals(settings: Settings, users: Iterable[str]) -> None:
    """Delete every binding and the SCRAM credentials of ``users`` (tests clean up their prefix with it)."""
    admin = _admin(settings)
    users = list(users)
    filters = [_everything(f"User:{user}") for user in users]
    if filters:
        _wait(admin.delete_acls(filters, request_timeout=TIMEOUT_S), "delete the ACLs of")
    existing = _scram_users(settings, users)
    deletions: list[UserScramCredentialAlteration] = [
        UserScramCredentialDeletion(u, m) for u, mechanisms in existing.items() for m in mechanisms
    ]
    if deletions:
        _wait(admin.alter_user_scram_credentials(deletions, request_timeout=TIMEOUT_S), "delete SCRAM user")


def ensure_users(settings: Settings, users: Iterable[str], password_for: Callable[[str], str]) -> list[str]:
    """Give each of ``users`` a SCRAM credential (``security.sasl_mechanism``) unless it has one; return those made."""
    mechanism = _MECHANISM.get(settings.security.sasl_mechanism)
    if mechanism is None:
        raise BrokerError(f"cannot make {settings.security.sasl_mechanism} users: only SCRAM users live in Kafka")
    users = list(users)
    existing = _scram_users(settings, users)
    missing = [u for u in users if mechanism not in existing.get(u, ())]
    if missing:
        info = ScramCredentialInfo(mechanism, SCRAM_ITERATIONS)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(u, info, password_for(u).encode()) for u in missing
        ]
        admin = _admin(settings)
        _wait(admin.alter_user_scram_credentials(upserts, request_timeout=TIMEOUT_S), "create SCRAM user")
        for user in missing:
            _wait_for_login(settings.replace(sasl_username=user, sasl_password=password_for(user)))
    return missing


def _wait_for_login(settings: Settings) -> None:
    """Wait until the broker lets a new user in: its credential cache trails the controller by a moment.

    Members started right after the user was made would otherwise be refused
    once or twice (and log it) before getting in.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            check_broker(settings, timeout_s=3.0)
            return
        except AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# -- helpers ----------------------------------------------------------------------


def _everything(principal: str | None = None) -> AclBindingFilter:
    """Every binding (of ``principal``, when given)."""
    any_ = (AclOperation.ANY, AclPermissionType.ANY)
    # None matches anything (the stubs say str).
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None, *any_)  # type: ignore[arg-type]


def _describe(admin: object) -> list[AclBinding]:
    try:
        return list(admin.describe_acls(_everything(), request_timeout=TIMEOUT_S).result(TIMEOUT_S * 2))  # type: ignore[attr-defined]
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.SECURITY_DISABLED:
            raise BrokerError(
                "this cluster has no authorizer (ACLs are disabled): start the local broker with --secure, "
                "or skip ACLs (pipeline topics apply --no-acls)"
            ) from exc
        raise BrokerError(f"cannot describe ACLs: {_reason(exc)}") from exc


def _exact(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
                            binding.host, binding.operation, binding.permission_type)  # fmt: skip


def _describe_binding(binding: AclBinding) -> str:
    pattern = "*" if binding.resource_pattern_type == ResourcePatternType.PREFIXED else ""
    operation, resource, permission = (
        getattr(x, "name", x) for x in (binding.operation, binding.restype, binding.permission_type)
    )
    return f"{binding.principal} {operation} {str(resource).lower()} {binding.name}{pattern} ({permission})"


def _scram_users(settings: Settings, users: list[str]) -> dict[str, tuple[ScramMechanism, ...]]:
    """The SCRAM mechanisms each of ``users`` has credentials for (absent: none)."""
    if not users:
        return {}
    found: dict[str, tuple[ScramMechanism, ...]] = {}
    admin = _admin(settings)  # held until the futures are done: a dropped client cancels them
    futures = admin.describe_user_scram_credentials(users, request_timeout=TIMEOUT_S)
    for user, future in futures.items():  # type: ignore[union-attr]
        try:
            description = future.result(TIMEOUT_S * 2)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.RESOURCE_NOT_FOUND:
                continue
            raise BrokerError(f"cannot describe SCRAM user {user}: {_reason(exc)}") from exc
        found[user] = tuple(info.mechanism for info in description.scram_credential_infos)
    return found
