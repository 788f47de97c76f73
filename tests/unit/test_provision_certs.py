"""The broker's CA and server certificate: a chain Python's TLS accepts, valid from before
any clock a freshly imaged wearable may show."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from vigil.provision.certs import VALID_FROM, make_broker_certs

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
