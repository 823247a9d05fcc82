"""One frozen Settings object in sections, read once from ``PIPELINE_*`` environment variables.

Every knob of every stage lives here, with its default and the reason for it,
in the section of what reads it (``settings.kafka``, ``settings.infer``,
``settings.chat``, ...), so a function that takes a section says what it reads.
A field's variable is ``PIPELINE_`` and its name, whatever its section: names
are unique across sections. Processes build a Settings at start
(``Settings.from_env()``), pass it down, and never read the environment again.
Flags of the ``pipeline`` command and tests override fields by name with
:meth:`Settings.replace` (or build one with :meth:`Settings.of`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pipeline.errors import ConfigError
from pipeline.settings_env import ENV_PREFIX, check_values, read_env, render
from pipeline.settings_sections import (
    PROJECT_ROOT,
    SECRET_FIELDS,
    BrokerSettings,
    CacheSettings,
    ChatSettings,
    FaqSettings,
    FilterSettings,
    Guarantee,
    InferSettings,
    KafkaSettings,
    LivenessSettings,
    MergeSettings,
    ModelSettings,
    RuntimeSettings,
    SecuritySettings,
    SplitSettings,
)

__all__ = [
    "FIELDS",
    "PROJECT_ROOT",
    "SECRET_FIELDS",
    "BrokerSettings",
    "CacheSettings",
    "ChatSettings",
    "FaqSettings",
    "FilterSettings",
    "Guarantee",
    "InferSettings",
    "KafkaSettings",
    "LivenessSettings",
    "MergeSettings",
    "ModelSettings",
    "RuntimeSettings",
    "SecuritySettings",
    "Settings",
    "SplitSettings",
    "setting_fields",
]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a stage, a command or a test needs to know about its world, by section."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    liveness: LivenessSettings = field(default_factory=LivenessSettings)
    filter: FilterSettings = field(default_factory=FilterSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    faq: FaqSettings = field(default_factory=FaqSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    infer: InferSettings = field(default_factory=InferSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Settings with the fields named in ``values`` (by their flat names) and defaults elsewhere."""
        return cls().replace(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build Settings from ``PIPELINE_<FIELD>`` variables, then ``overrides``.

        Unknown ``PIPELINE_*`` variables are an error: a typo must not be
        silently ignored.
        """
        values = read_env(os.environ if env is None else env, {name: kind for name, (_, kind) in FIELDS.items()})
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls.of(**values)
        settings.check()
        return settings

    def replace(self, **values: Any) -> Settings:
        """These Settings with the fields named in ``values`` (flat names, as ``PIPELINE_*`` has them) changed."""
        changed: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in FIELDS:
                raise ConfigError(f"no setting {name!r}")
            changed.setdefault(FIELDS[name][0], {})[name] = value
        return dataclasses.replace(
            self,
            **{section: dataclasses.replace(getattr(self, section), **fields) for section, fields in changed.items()},
        )

    def check(self) -> None:
        """Reject combinations that cannot work, with the setting to fix (the rules: :func:`check_values`)."""
        if not isinstance(self.runtime.processing_guarantee, Guarantee):
            raise ConfigError(
                f"PIPELINE_PROCESSING_GUARANTEE={self.runtime.processing_guarantee!r}: "
                "use exactly_once or at_least_once"
            )
        check_values(self)

    def to_env(self, *, secrets: bool = False) -> dict[str, str]:
        """``PIPELINE_*`` variables that make a child process build these same Settings.

        Only fields that differ from their defaults are written, so a child's
        environment reads like the overrides that were given. Secrets
        (``SECRET_FIELDS``) only with ``secrets=True``: for a child's
        environment, never for anything printed or written to a file.
        """
        env: dict[str, str] = {}
        defaults = Settings()
        for name in FIELDS:
            if name in SECRET_FIELDS and not secrets:
                continue
            value = self.value(name)
            if value != defaults.value(name):
                env[ENV_PREFIX + name.upper()] = render(value)
        return env

    # -- derived names ------------------------------------------------------------

    @property
    def sasl(self) -> bool:
        """Whether clients authenticate with SASL (and so the cluster may enforce ACLs)."""
        return self.security.security_protocol.startswith("SASL_")

    def principal(self, role: str) -> str:
        """The SASL user of a stage (or of ``client``, ``monitor``): named like its group."""
        return f"{self.kafka.prefix}{role}"

    def topic(self, name: str) -> str:
        """The cluster-side name of declared topic ``name``."""
        return f"{self.kafka.prefix}{name}"

    def group(self, stage: str) -> str:
        """The consumer group of a stage: the stage's name is its identity."""
        return f"{self.kafka.prefix}{stage}"

    def client_id(self, stage: str) -> str:
        """This member's id in its stage's group: client id, transactional id and static member id."""
        member = self.runtime.member or f"{socket.gethostname()}-{os.getpid()}"
        return f"{self.group(stage)}-{member}"

    def value(self, name: str) -> Any:
        """The setting called ``name`` (its flat name, as the catalog and the cache's version list name them)."""
        if name not in FIELDS:
            raise ConfigError(f"no setting {name!r}")
        return getattr(getattr(self, FIELDS[name][0]), name)

    def model_for(self, task: str) -> str:
        """The model configured for ``task`` ("" when the task is disabled), as the catalog says."""
        from pipeline.catalog import CATALOG

        spec = CATALOG[task]
        if spec.generator and not self.value(spec.generator):
            return ""  # a task that generates its reply needs its generator too
        return str(self.value(spec.model) or (self.value(spec.fallback) if spec.fallback else ""))


def _fields() -> dict[str, tuple[str, Any]]:
    """Every setting's flat name: the section it lives in and its type."""
    found: dict[str, tuple[str, Any]] = {}
    for section in dataclasses.fields(Settings):
        kind = get_type_hints(Settings)[section.name]
        for name, hint in get_type_hints(kind).items():
            if name in found:
                raise TypeError(f"setting {name!r} is in two sections")  # its PIPELINE_ name would be ambiguous
            found[name] = (section.name, hint)
    return found


FIELDS = _fields()
"""Flat name -> (section, type) of every setting: how a ``PIPELINE_*`` variable finds its field."""


def setting_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every setting's dataclass field by its flat name, with its default or factory (for docs and their tests)."""
    return {
        f.name: f
        for section in dataclasses.fields(Settings)
        for f in dataclasses.fields(get_type_hints(Settings)[section.name])
    }
