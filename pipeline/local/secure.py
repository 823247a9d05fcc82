"""The local broker in secure mode (``pipeline kafka start --secure``, PIPELINE_KAFKA_SECURE).

What changes against the plaintext broker:

* **Clients** connect to one ``SASL_SSL`` listener: TLS with the certificate
  from :mod:`pipeline.local.tls`, then SASL/SCRAM-SHA-512. The broker uses the
  same listener for its own inter-broker traffic (on one node that is, e.g.,
  the transaction coordinator writing commit markers to itself) as user
  ``broker``.
* **The controller listener** is TLS with client certificates required
  (mutual TLS, loopback): the broker's certificate (CN=broker) is its identity
  there, so nothing anonymous reaches the controller, not even on loopback.
* **Authorization**: KRaft's ``StandardAuthorizer``, nothing allowed without an
  ACL; ``broker`` and ``admin`` are super users. Everyone else gets exactly the
  ACLs of ``topics/acls/`` (``pipeline topics apply``).
* **A cluster** (``--secure --brokers 3``): every node has the same listeners,
  certificate and SCRAM users, kept once in the cluster's folder; replication
  between nodes goes over SASL_SSL as ``broker``, the controller quorum over
  mutual TLS.
* **Users**: ``broker`` and ``admin`` get SCRAM credentials when the storage
  is formatted (``kafka-storage format --add-scram``), so they exist before
  the first client connects; the pipeline's principals (stages, client,
  monitor) are added afterwards through the admin API
  (:func:`pipeline.runtime.users.ensure_users`), passwords in ``secrets/``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.local.layout import address, cluster_root
from pipeline.local.tls import TlsFiles, ensure_tls, password
from pipeline.settings import Settings

BROKER_USER = "broker"
ADMIN_USER = "admin"
MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def tls_files(settings: Settings) -> TlsFiles:
    """The CA, stores and passwords: one set for the broker, or for every node of a cluster (its folder)."""
    return TlsFiles(cluster_root(settings))


def listener_lines(settings: Settings) -> list[str]:
    """The server.properties lines of the secure broker's listeners, TLS, SASL and authorizer."""
    host, port, cport = settings.broker.kafka_host, settings.broker.kafka_port, settings.broker.kafka_controller_port
    files = tls_files(settings)
    store = password(files, ".store")
    broker_password = password(files, BROKER_USER)
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{BROKER_USER}" password="{broker_password}";'
    )
    return [
        "# Secure mode (pipeline kafka start --secure): see pipeline/local/secure.py.",
        f"listeners=SASL_SSL://{host}:{port},CONTROLLER://{host}:{cport}",
        f"advertised.listeners=SASL_SSL://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "# The broker's own connections (replication, transaction markers) use the client listener, as user",
        "# broker; in a cluster every node has the same certificate (CN=broker) and the same broker password.",
        "inter.broker.listener.name=SASL_SSL",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={files.keystore}",
        f"ssl.keystore.password={store}",
        f"ssl.key.password={store}",
        "ssl.truststore.type=PKCS12",
        f"ssl.truststore.location={files.truststore}",
        f"ssl.truststore.password={store}",
        "# The controller listener takes only certificates this CA signed (the broker's own).",
        "listener.name.controller.ssl.client.auth=required",
        "# A certificate's principal is its CN (User:broker), not the whole distinguished name.",
        "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
        f"authorizer.class.name={AUTHORIZER}",
        "# Nothing is allowed that no ACL allows.",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:{BROKER_USER};User:{ADMIN_USER}",
    ]


def scram_format_args(settings: Settings) -> list[str]:
    """``kafka-storage format`` arguments that create the broker's and admin's SCRAM credentials."""
    files = tls_files(settings)
    args: list[str] = []
    for user in (BROKER_USER, ADMIN_USER):
        args += ["--add-scram", f"{MECHANISM}=[name={user},password={password(files, user)}]"]
    return args


def admin_settings(settings: Settings) -> Settings:
    """``settings`` as the local secure broker's admin: SASL_SSL, user admin, the local CA."""
    files = tls_files(settings)
    password(files, ADMIN_USER)  # made with the storage; here only when asked before the first start
    return settings.replace(
        security_protocol="SASL_SSL",
        sasl_mechanism=MECHANISM,
        sasl_username=ADMIN_USER,
        sasl_password="",
        sasl_password_file=str(files.secrets),
        ssl_ca_location=str(files.ca_pem),
    )


def client_env(settings: Settings) -> dict[str, str]:
    """The PIPELINE_* variables that point a shell's commands at the local secure broker, as admin."""
    files = tls_files(settings)
    return {
        "PIPELINE_KAFKA_SECURE": "true",
        "PIPELINE_KAFKA_DIR": str(settings.broker.kafka_dir.resolve()),
        "PIPELINE_KAFKA_PORT": str(settings.broker.kafka_port),
        "PIPELINE_KAFKA_CONTROLLER_PORT": str(settings.broker.kafka_controller_port),
        **({"PIPELINE_KAFKA_BROKERS": str(settings.broker.kafka_brokers)} if settings.broker.kafka_brokers > 1 else {}),
        "PIPELINE_BOOTSTRAP_SERVERS": address(settings),
        "PIPELINE_SECURITY_PROTOCOL": "SASL_SSL",
        "PIPELINE_SASL_MECHANISM": MECHANISM,
        "PIPELINE_SASL_USERNAME": ADMIN_USER,
        "PIPELINE_SASL_PASSWORD_FILE": str(files.secrets),
        "PIPELINE_SSL_CA_LOCATION": str(files.ca_pem),
    }


def deploy_secrets(folder: Path, host: str, users: list[str]) -> list[Path]:
    """TLS stores and passwords for a secure broker elsewhere (docker-compose.secure.yml), made once.

    ``folder/tls``: the CA (PEM) and the broker's PKCS#12 stores, the
    certificate naming ``host``; ``folder/secrets``: one password file per
    user (broker, admin and ``users``), and ``kafka-passwords.properties``
    (``store=``, ``broker=``) for the broker's FileConfigProvider, so no
    password is written into the compose file or the broker's environment.
    """
    files = TlsFiles(folder.resolve())
    ensure_tls(files, host)
    for user in (BROKER_USER, ADMIN_USER, *users):
        password(files, user)
    properties = files.secrets / "kafka-passwords.properties"
    properties.touch(mode=0o600)
    properties.write_text(f"store={password(files, '.store')}\nbroker={password(files, BROKER_USER)}\n")
    return sorted(files.tls.iterdir()) + sorted(files.secrets.iterdir())
