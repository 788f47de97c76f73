"""vigil-device CLI: config errors exit non-zero naming key and file, before any hardware."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.device_setup import make_device
from vigil.device.cli import EX_CONFIG, main

ROOT = Path(__file__).resolve().parents[2]


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


def test_help_examples_name_files_that_exist_or_that_make_demo_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    configs = re.findall(r"^  vigil-device \w+ --config (\S+)", out, flags=re.MULTILINE)
    assert len(configs) == 3
    demo = "".join((ROOT / "demo" / name).read_text() for name in ("__main__.py", "setup.py"))
    for config in configs:
        if config.startswith("/etc/"):
            continue  # where the image and docs/technician.md install it
        assert config == "demo-run/device/device.toml"
        demo = (ROOT / "demo" / "__main__.py").read_text() + (
            ROOT / "demo" / "setup.py"
        ).read_text()
        assert '"demo-run"' in demo
        assert 'device_dir / "device.toml"' in demo


def _vigil_device(*args: str, tmp_path: Path, without_lgpio: bool = False) -> tuple[int, str]:
    """Run `vigil-device` as a user would; return its exit code and stderr."""
    code = "import sys\n"
    if without_lgpio:
        code += "sys.modules['lgpio'] = None  # as on a machine without the library\n"
    code += "from vigil.device.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIGIL_HARDWARE", "GPIOZERO_PIN_FACTORY")
    }
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return done.returncode, done.stderr


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["check", "run", "simulate"])
def test_a_state_dir_that_cannot_be_created_is_refused_by_every_command(
    tmp_path: Path, command: str
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder's parent should be\n")
    dev = make_device(tmp_path, overrides={"device": {"state_dir": str(blocker / "state")}})
    code, err = _vigil_device(command, "--config", str(dev.config_path), tmp_path=tmp_path)
    assert code == EX_CONFIG
    line = _one_line(err)
    assert "device.state_dir" in line
    assert str(blocker) in line


def test_simulate_with_a_missing_capture_says_which_file(tmp_path: Path) -> None:
    dev = make_device(tmp_path)
    missing = tmp_path / "track.nmea"
    args = ("simulate", "--config", str(dev.config_path), "--nmea", str(missing))
    code, err = _vigil_device(*args, tmp_path=tmp_path)
    assert code == EX_CONFIG
    line = _one_line(err)
    assert str(missing) in line
    assert "No such file" in line


def test_run_without_lgpio_says_what_to_install_or_choose(tmp_path: Path) -> None:
    dev = make_device(tmp_path)
    code, err = _vigil_device(
        "run", "--config", str(dev.config_path), tmp_path=tmp_path, without_lgpio=True
    )
    assert code == EX_CONFIG
    line = _one_line(err)  # no gpiozero fallback warnings, no traceback
    assert "python3-lgpio" in line
    assert 'backend = "simulate"' in line
