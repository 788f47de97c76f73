"""The broker's password file: what `set_password` refuses before mosquitto_passwd runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.broker import set_password
from wire.errors import ConfigError


@pytest.mark.parametrize("password", ["", "two\nlines", "cr\rhere", "nul\x00", "tab\tx"])
def test_a_password_that_would_break_the_stdin_protocol_is_refused(
    tmp_path: Path, password: str
) -> None:
    passwd = tmp_path / "passwd"
    with pytest.raises(ConfigError, match="printable"):
        set_password(passwd, "vigil-hub", password)
    assert not passwd.exists()
