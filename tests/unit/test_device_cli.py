"""vigil-device CLI: config errors exit non-zero naming key and file, before any hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.device_setup import make_device
from vigil.device.cli import EX_CONFIG, main


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "vigil-device run --config /etc/vigil/device.toml" in out
    assert "hold [s]" in out


def test_check_accepts_a_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = make_device(tmp_path)
    assert main(["check", "--config", str(dev.config_path)]) == 0
    assert dev.device_id.hex in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "simulate", "check"])
def test_config_error_exits_before_hardware(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    dev = make_device(tmp_path, overrides={"alarm": {"hold_seconds": "long"}})
    assert main([command, "--config", str(dev.config_path)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "alarm.hold_seconds" in err
    assert str(dev.config_path) in err
    assert not dev.state_dir.exists()  # nothing was opened


def test_insecure_key_file_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = make_device(tmp_path)
    (tmp_path / "device.key").chmod(0o644)
    assert main(["run", "--config", str(dev.config_path)]) == EX_CONFIG
    assert "chmod 600" in capsys.readouterr().err


def test_missing_password_file_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = make_device(tmp_path, overrides={"mqtt": {"password_file": str(tmp_path / "nope")}})
    assert main(["run", "--config", str(dev.config_path)]) == EX_CONFIG
    assert "mqtt.password_file" in capsys.readouterr().err


def test_password_file_readable_by_others_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    dev = make_device(tmp_path, overrides={"mqtt": {"password_file": str(secret)}})
    assert main(["run", "--config", str(dev.config_path)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "mqtt.password_file" in err
    assert "chmod 600" in err
    assert "hunter2" not in err


def test_missing_tls_ca_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = make_device(tmp_path, overrides={"mqtt": {"tls_ca": str(tmp_path / "ca.pem")}})
    assert main(["run", "--config", str(dev.config_path)]) == EX_CONFIG
    assert "mqtt.tls_ca" in capsys.readouterr().err
