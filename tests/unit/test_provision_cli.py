"""`vigil-provision` refuses garbage arguments with a clear message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.errors import BadConfigValue
from vigil.provision.certs import make_broker_certs
from vigil.provision.cli import main


@pytest.mark.parametrize("host", ["", "-lead", "a..b", "with space", "x" * 65, "ünï.org", "a/b"])
def test_broker_certs_refuse_a_bad_host(tmp_path: Path, host: str) -> None:
    with pytest.raises(BadConfigValue, match="--host"):
        make_broker_certs(tmp_path, host=host)
    assert not (tmp_path / "ca.key").exists()


def test_broker_certs_refuse_to_replace_a_ca_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["broker-certs", "--out", str(tmp_path), "--host", "broker.test"]) == 0
    ca = (tmp_path / "ca.pem").read_bytes()
    assert main(["broker-certs", "--out", str(tmp_path), "--host", "broker.test"]) == 1
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http", "1e3", ""])
def test_broker_config_refuses_a_bad_port(tmp_path: Path, port: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["broker-config", "--out", str(tmp_path), "--certs", str(tmp_path), "--port", port])
    assert exit_.value.code == 2


def test_broker_config_without_certs_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["broker-config", "--out", str(tmp_path / "o"), "--certs", str(tmp_path)]) == 1
    assert "broker-certs" in capsys.readouterr().err


@pytest.mark.parametrize("label", ["", "   ", "x" * 101, "line\nbreak", "\x1b[31mred"])
def test_device_refuses_a_bad_label(
    tmp_path: Path, label: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["device", "--label", label, "--hub-config", str(tmp_path / "hub.toml"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 1
    assert "--label" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_revoke_refuses_a_bad_device_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["revoke", "alice", "--hub-config", str(tmp_path / "hub.toml")]) == 1
    assert "device id" in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(argv=st.lists(st.sampled_from(["device", "revoke", "sd-image", "--out", "--label", "x",
                                      "--hub-config", "--image", "--force", "-", "\x00"]),
                     max_size=6))  # fmt: skip
def test_any_argument_soup_exits_cleanly(argv: list[str]) -> None:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code  # type: ignore[assignment]
    assert status in (0, 1, 2)


def test_renewing_the_server_certificate_keeps_the_ca(tmp_path: Path) -> None:
    assert main(["broker-certs", "--out", str(tmp_path), "--host", "broker.test"]) == 0
    ca_pem, ca_key = (tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca.key").read_bytes()
    old_server = (tmp_path / "server.pem").read_bytes()
    argv = ["broker-certs", "--out", str(tmp_path), "--host", "mqtt.test", "--renew-server"]
    assert main(argv) == 0
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem
    assert (tmp_path / "ca.key").read_bytes() == ca_key
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    assert server.public_bytes(serialization.Encoding.PEM) != old_server
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mqtt.test" in names.get_values_for_type(x509.DNSName)
    assert (tmp_path / "server.key").stat().st_mode & 0o777 == 0o600


def test_renewing_without_a_ca_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["broker-certs", "--out", str(tmp_path), "--host", "mqtt.test", "--renew-server"]
    assert main(argv) == 1
    assert "cannot load the CA" in capsys.readouterr().err
    assert not (tmp_path / "server.pem").exists()


@pytest.mark.parametrize(
    "contact", ["notaurl", "http://x", "", "mailto://", "json://127.0.0.1/\nbcc", "x" * 3000]
)
def test_device_refuses_a_contact_the_hub_could_not_notify(
    tmp_path: Path, contact: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["device", "--label", "Ana", "--hub-config", str(tmp_path / "hub.toml"),
            "--out", str(tmp_path / "out"), "--contact", "json://127.0.0.1:9/",
            "--contact", contact]  # fmt: skip
    assert main(argv) == 1
    assert "--contact" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
