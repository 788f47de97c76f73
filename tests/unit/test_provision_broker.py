"""The broker's password file: what `set_password` refuses before mosquitto_passwd runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.errors import BadConfigValue, ConfigError
from vigil.provision.broker import render_broker_config, set_password
from vigil.provision.certs import BrokerCerts, make_broker_certs


@pytest.mark.parametrize("password", ["", "two\nlines", "cr\rhere", "nul\x00", "tab\tx"])
def test_a_password_that_would_break_the_stdin_protocol_is_refused(
    tmp_path: Path, password: str
) -> None:
    passwd = tmp_path / "passwd"
    with pytest.raises(ConfigError, match="printable"):
        set_password(passwd, "vigil-hub", password)
    assert not passwd.exists()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> BrokerCerts:
    return make_broker_certs(tmp_path_factory.mktemp("certs"), host="broker.vigil.test")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("hub_user", "vigil hub"),
        ("hub_user", "hub\ntopic readwrite #"),
        ("hub_user", "+"),
        ("hub_user", ""),
        ("run_as", "mosquitto\nallow_anonymous true"),
        ("bind", "0.0.0.0\nlistener 1883"),
        ("bind", "-x"),
        ("pid_file", Path("/run/m.pid\nallow_anonymous true")),
        ("more_hub_users", ("hub two",)),
        ("more_hub_users", ("vigil-hub",)),  # two hubs under one user would evict each other
    ],
)
def test_a_value_that_would_break_out_of_its_line_is_refused(
    tmp_path: Path, certs: BrokerCerts, option: str, value: object
) -> None:
    with pytest.raises(BadConfigValue):
        render_broker_config(tmp_path / "conf", certs=certs, **{option: value})  # type: ignore[arg-type]
    assert not (tmp_path / "conf").exists()


def test_rerunning_broker_config_keeps_the_hub_password_and_the_devices(
    tmp_path: Path, certs: BrokerCerts
) -> None:
    files = render_broker_config(tmp_path, certs=certs, port=8884, bind="127.0.0.1")
    password = files.hub_password.read_text()
    set_password(files.passwd, "0" * 32, "a-device-password")
    again = render_broker_config(tmp_path, certs=certs, port=8884, bind="127.0.0.1")
    assert again.hub_password.read_text() == password
    users = [line.split(":")[0] for line in again.passwd.read_text().splitlines()]
    assert sorted(users) == ["0" * 32, "vigil-hub"]
    assert "listener 8884 127.0.0.1\n" in again.conf.read_text()
    assert again.hub_password.stat().st_mode & 0o777 == 0o600
