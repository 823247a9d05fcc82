"""The monitor's TLS and SASL for faust (aiokafka), from the same settings as every librdkafka client.

:func:`pipeline.runtime.config.security_config` gives librdkafka its
``security.protocol``, ``sasl.*`` and ``ssl.ca.location``; faust takes the
same things as one credentials object. Both read the user and password through
:mod:`pipeline.security`, so the password comes from the same setting, file or
folder and is never logged: faust's ``SASLCredentials`` shows only the user in
its repr, and the SSL context holds no secret.
"""

from __future__ import annotations

import ssl

import faust
from faust.types.auth import CredentialsT

from pipeline.security import sasl_password, sasl_user
from pipeline.settings import SecuritySettings, Settings

# librdkafka's special ssl.ca.location: its usual places for the system's CAs.
# Python's default context looks in OpenSSL's default places, the same idea.
_SYSTEM_CAS = ("", "probe")


def as_monitor(settings: Settings) -> Settings:
    """On a secured cluster with no user set, ``settings`` as the monitor's principal (``{prefix}monitor``)."""
    if settings.sasl and not settings.security.sasl_username:
        return settings.replace(sasl_username=settings.principal("monitor"))
    return settings


def ssl_context(security: SecuritySettings) -> ssl.SSLContext:
    """A client TLS context that trusts ``PIPELINE_SSL_CA_LOCATION`` (or the system's CAs) and checks host names."""
    if security.ssl_ca_location in _SYSTEM_CAS:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=security.ssl_ca_location)


def credentials(settings: Settings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for ``settings``: None on PLAINTEXT."""
    protocol = settings.security.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings.security) if protocol.endswith("SSL") else None
    if not settings.sasl:
        assert context is not None  # SSL: TLS without SASL
        return faust.SSLCredentials(context)
    # SASL_SSL with a context, SASL_PLAINTEXT without (faust picks the protocol from that).
    return faust.SASLCredentials(
        username=sasl_user(settings.security),
        password=sasl_password(settings.security),
        mechanism=settings.security.sasl_mechanism,
        ssl_context=context,
    )
