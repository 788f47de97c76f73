"""The broker's CA and server certificate: a chain Python's TLS accepts, valid from before
any clock a freshly imaged wearable may show."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from vigil.provision.certs import (
    VALID_FROM,
    BrokerCerts,
    make_broker_certs,
    renew_server_cert,
)

NOW = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_is_issued_by_the_ca_for_the_host(tmp_path: Path) -> None:
    certs = make_broker_certs(tmp_path, host="broker.vigil.test", now=NOW)
    ca, server = load(certs.ca), load(certs.server)
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.vigil.test" in names.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (certs.ca_key, certs.server_key):
        assert key.stat().st_mode & 0o777 == 0o600


def test_valid_from_before_an_unsynchronised_wearable_clock(tmp_path: Path) -> None:
    # A Pi without RTC first boots at its image's build date (2023 for early Bookworm).
    certs = make_broker_certs(tmp_path, host="broker.vigil.test", now=NOW)
    image_built = dt.datetime(2023, 10, 10, tzinfo=dt.UTC)
    for cert in (load(certs.ca), load(certs.server)):
        assert cert.not_valid_before_utc == VALID_FROM
        assert cert.not_valid_before_utc < image_built
        assert cert.not_valid_after_utc > NOW + dt.timedelta(days=700)


def handshake(certs: BrokerCerts, host: str) -> None:
    """A TLS handshake, in memory, between the broker's pair and a client trusting the CA that
    verifies as Python 3.13 does by default (VERIFY_X509_STRICT: Trixie's Python)."""
    client_ctx = ssl.create_default_context(cafile=certs.ca)
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.server, certs.server_key)
    wires = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(2)]
    client = client_ctx.wrap_bio(*wires[0], server_hostname=host)
    server = server_ctx.wrap_bio(*wires[1], server_side=True)
    done = {client: False, server: False}
    for _ in range(10):  # a TLS 1.3 handshake needs three flights
        for end in done:
            try:
                end.do_handshake()
                done[end] = True
            except ssl.SSLWantReadError:
                pass
        wires[1][0].write(wires[0][1].read())  # client -> server
        wires[0][0].write(wires[1][1].read())  # server -> client
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("host", ["broker.vigil.test", "localhost"])
def test_a_strict_verifier_accepts_the_broker(tmp_path: Path, host: str) -> None:
    # Without Authority and Subject Key Identifiers, a Trixie wearable refused the broker:
    # "certificate verify failed: Missing Authority Key Identifier" (make pi-proof).
    certs = make_broker_certs(tmp_path, host="broker.vigil.test", now=NOW)
    handshake(certs, host)
    renew_server_cert(tmp_path, host="broker.vigil.test")
    handshake(certs, host)


def test_a_strict_verifier_refuses_a_server_the_ca_did_not_issue(tmp_path: Path) -> None:
    certs = make_broker_certs(tmp_path / "ours", host="broker.vigil.test", now=NOW)
    other = make_broker_certs(tmp_path / "other", host="broker.vigil.test", now=NOW)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(BrokerCerts(certs.ca, certs.ca_key, other.server, other.server_key), "localhost")
