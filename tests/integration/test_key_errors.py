"""Key-file errors a person can act on, from the three CLIs: one line, exit non-zero.

The suite runs as root in CI, where no folder refuses a write; the permission
tests then run the command in a forked child as `nobody` (uid 65534), as the
README's reader who is not root would. (A forked child, not a new process:
`nobody` may not be able to reach the interpreter, e.g. under /root.)
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.device_setup import make_device
from vigil.hub.cli import main as hub
from vigil.provision.cli import main as provision
from vigil.wire import HubKeys

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
NOBODY = 65534


def command(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `vigil-<name>` as a subprocess, as a person would."""
    module = {"hub": "vigil.hub.cli", "device": "vigil.device.cli",
              "provision": "vigil.provision.cli"}[name]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          check=False, timeout=60, env=env)  # fmt: skip


def unprivileged(run: Callable[[], int]) -> subprocess.CompletedProcess[str]:
    """Call `run` in a forked child that is `nobody` if we are root; its status and stderr."""
    read, write = os.pipe()
    with warnings.catch_warnings():  # no threads run here; fork() warns only if they might
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: reports through the pipe and never returns into pytest
        status = 70
        try:
            sys.stderr = os.fdopen(write, "w")
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            status = run()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        err = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess([], os.waitstatus_to_exitcode(wait_status), "", err)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder that nobody may enter (pytest's own is private to the test user)."""
    folder = Path(tempfile.mkdtemp(prefix="vigil-keys-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_keygen_into_a_folder_this_user_may_not_write(shared_tmp: Path) -> None:
    var_lib = shared_tmp / "var-lib"  # stands in for /var/lib: exists, not ours to write
    var_lib.mkdir(mode=0o755)
    if os.geteuid() != 0:
        var_lib.chmod(0o555)
    key = var_lib / "vigil-hub" / "hub.key"
    error = one_line_error(
        unprivileged(lambda: hub(["keygen", "--out", str(key)], out=io.StringIO()))
    )
    assert error.startswith(f"vigil-hub: cannot write key file {key}: permission denied: ")
    assert f"{var_lib} belongs to " in error
    assert "sudo" in error
    assert "another --out" in error
    assert list(var_lib.iterdir()) == []  # nothing half-made, no stray copy of a key


def test_keygen_to_a_folder_names_a_file_inside_it(tmp_path: Path) -> None:
    for extra in ((), ("--force",)):
        error = one_line_error(command("hub", "keygen", "--out", str(tmp_path), *extra))
        assert error == (f"vigil-hub: {tmp_path} is a folder; give the key file's own path, "
                         f"e.g. --out {tmp_path / 'hub.key'}")  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # --force wrote no stray temporary key beside it


def hub_config(tmp_path: Path, keys: Path) -> Path:
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\nkeys = "{keys}"\n[store]\nurl = "sqlite:///hub.db"\n'
                      '[mqtt]\nhost = "127.0.0.1"\n')  # fmt: skip
    return config


def test_a_key_path_that_is_a_folder_gets_no_chmod_advice(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    error = one_line_error(command("hub", "pubkey", "--config", str(hub_config(tmp_path, folder))))
    assert (
        error == f"vigil-hub: key file {folder} is a folder; give the path of the key file itself"
    )
    assert "run 'chmod" not in error


def test_chmod_advice_names_the_key_file_and_only_it(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    key = folder / "hub.key"
    HubKeys.generate().save(key)
    key.chmod(0o644)
    error = one_line_error(command("hub", "pubkey", "--config", str(hub_config(tmp_path, key))))
    assert error == (f"vigil-hub: key file {key} has mode 0644, so others may read it; "
                     f"run 'chmod 600 {key}'")  # fmt: skip
    key.chmod(0o600)  # the file is fine, its 0755 folder is no reason to complain
    assert command("hub", "pubkey", "--config", str(hub_config(tmp_path, key))).returncode == 0


def test_a_key_only_its_owner_may_read(shared_tmp: Path) -> None:
    key = shared_tmp / "hub.key"
    HubKeys.generate().save(key)
    if os.geteuid() != 0:
        key.chmod(0o200)  # not even its owner may read it: the same refusal
    config = hub_config(shared_tmp, key)
    config.chmod(0o644)
    error = one_line_error(unprivileged(lambda: hub(["pubkey", "--config", str(config)],
                                                    out=io.StringIO())))  # fmt: skip
    assert error.startswith(f"vigil-hub: cannot read key file {key}: ")
    assert "run it " in error
    assert "run 'chmod" not in error


def test_device_cli_names_a_key_folder(tmp_path: Path) -> None:
    dev = make_device(tmp_path)
    key = tmp_path / "device.key"
    key.unlink()
    key.mkdir()
    done = command("device", "check", "--config", str(dev.config_path))
    assert done.returncode != 0
    assert f"key file {key} is a folder" in done.stderr
    assert "run 'chmod" not in done.stderr
    assert "Traceback" not in done.stderr


def test_provision_names_a_folder_it_may_not_write(shared_tmp: Path) -> None:
    HubKeys.generate().save(shared_tmp / "hub.key")
    (shared_tmp / "ca.pem").write_text("not read before the keys are written\n")
    config = hub_config(shared_tmp, shared_tmp / "hub.key")
    config.write_text(config.read_text() + '[broker]\ndevice_host = "127.0.0.1"\n'
                      'ca_file = "ca.pem"\npassword_file = "passwd"\n')  # fmt: skip
    config.chmod(0o644)
    locked = shared_tmp / "locked"
    locked.mkdir(mode=0o755)
    if os.geteuid() != 0:
        locked.chmod(0o555)
    out = locked / "wearable-01"
    argv = ["device", "--label", "Ana", "--hub-config", str(config), "--out", str(out)]
    error = one_line_error(unprivileged(lambda: provision(argv)))
    assert error.startswith(f"vigil-provision: cannot write key file {out / 'device.key'}: "
                            f"permission denied: {locked} belongs to ")  # fmt: skip
    assert "another --out" in error


def test_provision_names_any_folder_it_may_not_write(shared_tmp: Path) -> None:
    locked = shared_tmp / "etc-vigil"
    locked.mkdir(mode=0o755)
    if os.geteuid() != 0:
        locked.chmod(0o555)
    argv = ["broker-certs", "--out", str(locked / "broker"), "--host", "broker.example.org"]
    error = one_line_error(unprivileged(lambda: provision(argv)))
    assert error == (f"vigil-provision: {locked / 'broker'}: Permission denied; "
                     "run it with sudo or write somewhere else")  # fmt: skip
