"""A small certificate authority for the broker's TLS: one CA, one server certificate.

For a test or a small deployment; an organisation with its own PKI can use
that instead (the broker only needs `cafile`, `certfile`, `keyfile`).
ECDSA P-256 keys and SHA-256 signatures, which every TLS stack on the path
(mosquitto's OpenSSL, Python's ssl on the Pi) accepts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vigil.errors import BadConfigValue, KeyFileError
from vigil.wire.keys import write_atomically

CA_DAYS = 10 * 365
HOST_RE = re.compile(
    r"(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
SERVER_DAYS = 2 * 365
# A wearable has no real-time clock: it boots with its image's build date until NTP answers
# (and not at all on a network that blocks NTP). Certificates "not yet valid" at that date
# would keep it off the broker, so they are valid from well before any supported image.
VALID_FROM = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class BrokerCerts:
    """Where the files are: the CA certificate devices trust, and the server's pair."""

    ca: Path
    ca_key: Path
    server: Path
    server_key: Path

    @classmethod
    def in_dir(cls, folder: Path) -> BrokerCerts:
        return cls(
            folder / "ca.pem", folder / "ca.key", folder / "server.pem", folder / "server.key"
        )


def make_broker_certs(
    folder: Path, *, host: str, now: dt.datetime | None = None, force: bool = False
) -> BrokerCerts:
    """Create a CA and a server certificate for `host` (plus 127.0.0.1 and localhost)."""
    _check_host(host)
    certs = BrokerCerts.in_dir(folder)
    if certs.ca_key.exists() and not force:
        raise KeyFileError(
            f"{certs.ca_key} already exists; pass --renew-server for a new server certificate "
            "from this CA, or --force to replace the CA (every device must then get the new one)"
        )
    now = now or dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vigil broker CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .add_extension(_authority(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_atomically(certs.ca, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    write_atomically(certs.ca_key, _private_pem(ca_key), mode=0o600)
    _issue_server(certs, ca, ca_key, host=host, now=now)
    return certs


def renew_server_cert(folder: Path, *, host: str, now: dt.datetime | None = None) -> BrokerCerts:
    """Issue a new server certificate (and key) from the existing CA; devices keep trusting it."""
    _check_host(host)
    certs = BrokerCerts.in_dir(folder)
    try:
        ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
        ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot load the CA in {folder}: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{certs.ca_key} is not the EC key broker-certs makes")
    _issue_server(certs, ca, ca_key, host=host, now=now or dt.datetime.now(dt.UTC))
    return certs


def _check_host(host: str) -> None:
    if not HOST_RE.fullmatch(host):
        raise BadConfigValue(
            f"--host must be a DNS name (letters, digits, '-', '.'), got {host!r}"
        )


def _issue_server(
    certs: BrokerCerts, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, host: str,
    now: dt.datetime,
) -> None:  # fmt: skip
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost")]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    server = (
        _builder(server_name, ca.subject, server_key.public_key(), now, SERVER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), False)
        .add_extension(_authority(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    owner = _owner(certs.server_key)
    write_atomically(certs.server_key, _private_pem(server_key), mode=0o600)
    write_atomically(certs.server, server.public_bytes(serialization.Encoding.PEM), mode=0o644)
    if owner is not None and os.geteuid() == 0:
        os.chown(certs.server_key, *owner)  # the broker's user, as the technician set it


def _owner(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - dt.timedelta(minutes=5), VALID_FROM))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _authority(ca_key: ec.EllipticCurvePublicKey) -> x509.AuthorityKeyIdentifier:
    """The issuing CA's key id. Python 3.13 (Trixie) verifies with VERIFY_X509_STRICT, which
    refuses a certificate without it ("Missing Authority Key Identifier"), and a CA without
    a Subject Key Identifier; both are derived from the CA's key, as RFC 5280 suggests."""
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
