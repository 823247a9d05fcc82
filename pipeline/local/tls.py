"""TLS material and passwords for the local secure broker, made with the JDK's keytool.

Nothing here does cryptography itself: keytool (shipped with the Java the
broker needs anyway) makes a CA, signs the broker's certificate with it and
writes the PKCS#12 stores the broker reads. Clients get the CA as PEM
(``ssl.ca.location``). Layout under ``settings.broker.kafka_dir``::

    tls/ca.p12            the CA's key pair (only needed to sign again)
    tls/ca.pem            the CA certificate: what clients trust (PIPELINE_SSL_CA_LOCATION)
    tls/broker.p12        the broker's key and certificate chain (keystore)
    tls/truststore.p12    the CA, for the broker's own connections (controller, inter-broker)
    secrets/<user>        one password per SASL user (0600); secrets/.store for the stores

The broker certificate names 127.0.0.1, localhost and ``settings.broker.kafka_host``,
so clients verify the host name (librdkafka does by default) and the broker
verifies itself when it connects to its own listeners.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BrokerError, ConfigError

CA_DAYS = 3650
BROKER_DAYS = 825  # the longest validity common TLS stacks accept for a server certificate
KEY = ["-keyalg", "RSA", "-keysize", "2048"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    root: Path  # settings.broker.kafka_dir

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def ca_store(self) -> Path:
        return self.tls / "ca.p12"

    @property
    def ca_pem(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.tls / "broker.p12"

    @property
    def truststore(self) -> Path:
        return self.tls / "truststore.p12"

    def password_file(self, user: str) -> Path:
        return self.secrets / user

    @property
    def store_password_file(self) -> Path:
        return self.secrets / ".store"


def password(files: TlsFiles, user: str) -> str:
    """The password of ``user`` (or ``.store``), made the first time it is asked for."""
    return password_in(files.secrets, user)


def password_in(folder: Path, user: str) -> str:
    """The password in ``folder/user``, a new random one the first time (the file readable by its owner only)."""
    path = folder / user
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        # Created 0600 before anything is written: the password is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def ensure_tls(files: TlsFiles, host: str) -> bool:
    """Make the CA, the broker certificate and the stores unless they are all there; True if made."""
    if all(p.exists() for p in (files.ca_pem, files.keystore, files.truststore)):
        return False
    keytool = shutil.which("keytool")
    if keytool is None:
        raise ConfigError("keytool not found on PATH: it comes with Java (apt-get install openjdk-17-jre-headless)")
    store = password(files, ".store")
    if files.tls.exists():
        shutil.rmtree(files.tls)  # a half-made set from an interrupted run: start over
    files.tls.mkdir(parents=True)
    csr = files.tls / "broker.csr"
    signed = files.tls / "broker.pem"
    names = {"dns:localhost", "ip:127.0.0.1", _san(host)}

    def run(*args: str) -> None:
        result = subprocess.run([keytool, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"keytool {args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}")

    ca = ["-keystore", str(files.ca_store), "-storetype", "PKCS12", "-storepass", store]
    broker = ["-keystore", str(files.keystore), "-storetype", "PKCS12", "-storepass", store]
    run("-genkeypair", "-alias", "ca", *KEY, "-dname", "CN=pipeline local CA", "-validity", str(CA_DAYS),
        "-ext", "bc:c", "-ext", "KeyUsage=keyCertSign,cRLSign", *ca)  # fmt: skip
    run("-exportcert", "-rfc", "-alias", "ca", "-file", str(files.ca_pem), *ca)
    # CN=broker: the principal the broker's own certificate maps to (super user on the controller listener).
    run("-genkeypair", "-alias", "broker", *KEY, "-dname", "CN=broker", "-validity", str(BROKER_DAYS), *broker)
    run("-certreq", "-alias", "broker", "-file", str(csr), *broker)
    run("-gencert", "-alias", "ca", "-infile", str(csr), "-outfile", str(signed), "-rfc",
        "-validity", str(BROKER_DAYS), "-ext", "SAN=" + ",".join(sorted(names)),
        "-ext", "KeyUsage=digitalSignature,keyEncipherment",
        "-ext", "ExtendedKeyUsage=serverAuth,clientAuth", *ca)  # fmt: skip
    run("-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca_pem), *broker)
    run("-importcert", "-alias", "broker", "-file", str(signed), *broker)
    truststore = ["-keystore", str(files.truststore), "-storetype", "PKCS12", "-storepass", store]
    run("-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca_pem), *truststore)
    csr.unlink()
    for keys in (files.ca_store, files.keystore):  # private keys: the owner's only
        os.chmod(keys, 0o600)
    return True


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"dns:{host}"
    return f"ip:{host}"
