"""Who this process is on a secured cluster: its SASL user and password (no Kafka here).

The password comes from, in this order: ``PIPELINE_SASL_PASSWORD``;
``PIPELINE_SASL_PASSWORD_FILE`` naming a file; or that setting naming a
folder with one file per user, named after the user (Docker secrets under
``/run/secrets``, a mounted Kubernetes secret, the local secure broker's
``secrets/``). It is read when a client is made, never logged, and an error
names the file, never what is in it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.settings import SecuritySettings


def sasl_user(security: SecuritySettings) -> str:
    """The SASL user of this process; an error saying how to set it when there is none."""
    if not security.sasl_username:
        raise ConfigError(
            f"PIPELINE_SECURITY_PROTOCOL={security.security_protocol} needs a user: set PIPELINE_SASL_USERNAME "
            "(a stage member started with `pipeline run STAGE` uses its stage's principal by itself)"
        )
    return security.sasl_username


def sasl_password(security: SecuritySettings) -> str:
    """The password of :func:`sasl_user`, from the setting, its file, or its folder."""
    if security.sasl_password:
        return security.sasl_password
    if not security.sasl_password_file:
        raise ConfigError(
            f"no password for SASL user {sasl_user(security)!r}: set PIPELINE_SASL_PASSWORD_FILE "
            "(a file, or a folder with one file per user) or PIPELINE_SASL_PASSWORD"
        )
    path = Path(security.sasl_password_file)
    if path.is_dir():
        path = path / sasl_user(security)
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the password of SASL user {sasl_user(security)!r} from {path}: {exc.strerror}"
        ) from exc
    if not password:
        raise ConfigError(f"the password file {path} of SASL user {sasl_user(security)!r} is empty")
    return password
