"""`vigil-provision device` and `revoke` against a real hub store and a locked-down broker."""

from __future__ import annotations

import io
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.locked_broker import LockedBroker, locked_broker, tls_client
from tests.support.wait import wait_until
from vigil.device.config import load_config as load_device_config
from vigil.hub.cli import main as hub_main
from vigil.hub.store import open_store
from vigil.hub.store.records import DeviceRecord
from vigil.provision.broker import set_password
from vigil.provision.cli import main
from vigil.wire import DeviceId, DeviceKeys, HubKeys, Suite
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, LockedBroker]]:
    with locked_broker(tmp_path / "broker") as locked:
        HubKeys.generate().save(tmp_path / "hub.key")
        hub_toml = tmp_path / "hub.toml"
        hub_toml.write_text(f"""
[hub]
keys = "hub.key"
[store]
url = "sqlite:///hub.db"
[mqtt]
host = "127.0.0.1"
[broker]
device_host = "127.0.0.1"
device_port = {locked.broker.port}
ca_file = "{locked.certs.ca}"
password_file = "{locked.files.passwd}"
""")
        assert hub_main(["init", "--config", str(hub_toml)], out=io.StringIO()) == 0
        yield hub_toml, locked


def provision(hub_toml: Path, out: Path, *extra: str) -> int:
    return main(["device", "--label", "Ana (Oaxaca)", "--hub-config", str(hub_toml),
                 "--out", str(out), *extra])  # fmt: skip


def on_this_machine(out: Path) -> Path:
    """The device config with its on-device paths pointed into the provisioning folder."""
    text = (out / "device.toml").read_text()
    text = text.replace("/var/lib/vigil-device/device.key", str(out / "device.key"))
    text = text.replace("/var/lib/vigil-device", str(out / "state"))
    text = text.replace("/etc/vigil/mqtt-password", str(out / "mqtt-password"))
    text = text.replace("/etc/vigil/ca.pem", str(out / "ca.pem"))
    local = out / "local.toml"
    local.write_text(text)
    return local


def test_provisioned_device_is_enrolled_configured_and_can_connect(
    setup: tuple[Path, LockedBroker], tmp_path: Path
) -> None:
    hub_toml, locked = setup
    out = tmp_path / "wearable-01"
    pid_file = locked.files.conf.parent / "mosquitto.pid"
    contact = "mailtos://ana:secret@example.org"
    assert provision(hub_toml, out, "--broker-pid-file", str(pid_file), "--contact", contact) == 0
    for secret in ("device.key", "mqtt-password"):
        assert (out / secret).stat().st_mode & 0o777 == 0o600
    cfg = load_device_config(on_this_machine(out))
    keys = DeviceKeys.load(out / "device.key")
    record = hub_record(tmp_path, cfg.device_id)
    assert record.label == "Ana (Oaxaca)"
    assert list(record.contacts) == [contact]
    assert record.public_keys.to_text() == keys.public().to_text()
    # Post-quantum by default: hybrid uplinks, and a hybrid downlink key at the hub.
    assert cfg.suite is Suite.MLKEM768_X25519_CHACHA20
    assert keys.hybrid_kem is not None
    assert record.public_keys.downlink_suite is Suite.MLKEM768_X25519_CHACHA20
    assert cfg.hub.to_text() == HubKeys.load(tmp_path / "hub.key").public().to_text()
    assert cfg.mqtt.username == cfg.device_id.hex
    pinout = tomllib.loads((ROOT / "vigil" / "device" / "pinout.toml").read_text())
    assert cfg.battery_path == Path(pinout["i2c"]["capacity_path"])  # the fuel gauge's driver
    # No restart: the reload (SIGHUP) made mosquitto read the new password entry.
    with (
        tls_client(locked, "hub", user="vigil-hub", password=locked.hub_password,
                   subscriptions=("vigil/v1/+/up",)) as (_, at_hub),
        tls_client(locked, cfg.device_id.hex, user=cfg.device_id.hex,
                   password=cfg.mqtt_password(), ca=out / "ca.pem") as (device, _),
    ):  # fmt: skip
        assert device.wait_connected(10)
        topic = up_topic(cfg.device_id)
        wait_until(lambda: (device.publish(topic, b"hello"), at_hub.got(topic))[1], 10)


def test_suite_x25519_gives_a_classic_device_no_hybrid_key(
    setup: tuple[Path, LockedBroker], tmp_path: Path
) -> None:
    hub_toml, _ = setup
    out = tmp_path / "wearable-classic"
    assert provision(hub_toml, out, "--suite", "x25519") == 0
    cfg = load_device_config(on_this_machine(out))
    keys = DeviceKeys.load(out / "device.key")
    assert cfg.suite is Suite.X25519_CHACHA20
    assert keys.hybrid_kem is None
    assert hub_record(tmp_path, cfg.device_id).public_keys.downlink_suite is Suite.X25519_CHACHA20


def test_rerun_is_idempotent_and_new_keys_need_force(
    setup: tuple[Path, LockedBroker], tmp_path: Path
) -> None:
    hub_toml, _ = setup
    out = tmp_path / "wearable-02"
    assert provision(hub_toml, out) == 0
    first_id = (out / "device.toml").read_text()
    first_key = (out / "device.key").read_bytes()
    assert provision(hub_toml, out) == 0
    assert (out / "device.toml").read_text() == first_id
    assert (out / "device.key").read_bytes() == first_key
    assert provision(hub_toml, out, "--force") == 0
    assert (out / "device.key").read_bytes() != first_key
    device_id = DeviceId.parse(re.findall(r'id = "([0-9a-f]{32})"', first_id)[0])
    record = hub_record(tmp_path, device_id)
    assert not record.revoked
    assert record.public_keys.to_text() == DeviceKeys.load(out / "device.key").public().to_text()


def test_revoke_removes_broker_access_and_hub_acceptance(
    setup: tuple[Path, LockedBroker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_toml, locked = setup
    out = tmp_path / "wearable-03"
    assert provision(hub_toml, out) == 0
    capsys.readouterr()
    cfg = load_device_config(on_this_machine(out))
    assert cfg.device_id.hex in locked.files.passwd.read_text()
    locked.broker.restart()
    pid_file = locked.files.conf.parent / "mosquitto.pid"  # written by mosquitto itself
    assert locked.broker.process is not None
    assert pid_file.read_text().strip() == str(locked.broker.process.pid)
    password = cfg.mqtt_password()
    with tls_client(locked, cfg.device_id.hex, user=cfg.device_id.hex, password=password,
                    ca=out / "ca.pem") as (device, seen):  # fmt: skip
        assert device.wait_connected(10)
        argv = ["revoke", cfg.device_id.hex, "--hub-config", str(hub_toml),
                "--broker-pid-file", str(pid_file)]  # fmt: skip
        assert main(argv) == 0
        # mosquitto re-reads the password file on reload and drops the open connection
        wait_until(lambda: not device.connected, 10, what="the revoked device to be dropped")
        wait_until(lambda: seen.refusals, 10, what="its reconnection to be refused")
    assert capsys.readouterr().out.splitlines() == [
        "hub: done: revoked: the hub refuses its messages",
        "broker password: done: removed",
        f"broker reload: done: SIGHUP sent to mosquitto (pid {locked.broker.process.pid}); "
        "it drops the device's connection",
        f"revoked {cfg.device_id}",
    ]
    assert cfg.device_id.hex not in locked.files.passwd.read_text()
    assert hub_record(tmp_path, cfg.device_id).revoked


def test_hub_config_without_broker_section_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    HubKeys.generate().save(tmp_path / "hub.key")
    hub_toml = tmp_path / "hub.toml"
    hub_toml.write_text('[hub]\nkeys = "hub.key"\n[store]\nurl = "sqlite:///h.db"\n'
                        '[mqtt]\nhost = "127.0.0.1"\n')  # fmt: skip
    assert provision(hub_toml, tmp_path / "out") == 1
    assert "[broker]" in capsys.readouterr().err
    assert main(["revoke", "not-an-id", "--hub-config", str(hub_toml)]) == 1


def hub_record(tmp_path: Path, device_id: DeviceId) -> DeviceRecord:
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with store.read() as tx:
            record = tx.devices.get(device_id)
    finally:
        store.close()
    assert record is not None
    return record


def connects(locked: LockedBroker, device_id: DeviceId, password: str, ca: Path) -> bool:
    """Whether the broker accepts `password` for the device (it either connects or refuses)."""
    with tls_client(locked, device_id.hex, user=device_id.hex, password=password, ca=ca) as (
        device,
        seen,
    ):
        wait_until(lambda: device.connected or seen.refusals, 10, what="a CONNACK")
        return device.connected


def test_revoked_device_comes_back_only_with_new_keys_and_password(
    setup: tuple[Path, LockedBroker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_toml, locked = setup
    out = tmp_path / "wearable-04"
    assert provision(hub_toml, out) == 0
    cfg = load_device_config(on_this_machine(out))
    old_key, old_password = (out / "device.key").read_bytes(), cfg.mqtt_password()
    assert main(["revoke", cfg.device_id.hex, "--hub-config", str(hub_toml)]) == 0
    capsys.readouterr()
    # The same folder again (a mistake, or the seized wearable's own files): refused.
    assert provision(hub_toml, out) == 1
    assert "--force" in capsys.readouterr().err
    assert hub_record(tmp_path, cfg.device_id).revoked
    assert cfg.device_id.hex not in locked.files.passwd.read_text()
    assert provision(hub_toml, out, "--force") == 0
    record = hub_record(tmp_path, cfg.device_id)
    assert not record.revoked
    new_keys = DeviceKeys.load(out / "device.key")
    assert record.public_keys.to_text() == new_keys.public().to_text()
    assert (out / "device.key").read_bytes() != old_key
    new_password = (out / "mqtt-password").read_text().strip()
    assert new_password != old_password
    locked.broker.restart()
    assert not connects(locked, cfg.device_id, old_password, out / "ca.pem")
    assert connects(locked, cfg.device_id, new_password, out / "ca.pem")


def test_a_failed_run_is_finished_by_a_rerun_with_the_same_id(
    setup: tuple[Path, LockedBroker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_toml, locked = setup
    good = hub_toml.read_text()
    # The broker's password file cannot be written (here: it is a folder).
    hub_toml.write_text(good.replace(str(locked.files.passwd), str(tmp_path)))
    out = tmp_path / "wearable-05"
    assert provision(hub_toml, out) == 1
    assert "mosquitto_passwd" in capsys.readouterr().err
    first = load_device_config(on_this_machine(out))
    hub_toml.write_text(good)
    assert provision(hub_toml, out) == 0
    again = load_device_config(on_this_machine(out))
    assert again.device_id == first.device_id
    assert hub_record(tmp_path, first.device_id).label == "Ana (Oaxaca)"
    assert first.device_id.hex in locked.files.passwd.read_text()


def test_revoke_cuts_broker_access_even_when_the_hub_does_not_know_the_device(
    setup: tuple[Path, LockedBroker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_toml, locked = setup
    stray = DeviceId.generate()  # has a broker password, but no hub record (another hub's?)
    set_password(locked.files.passwd, stray.hex, "stray-password")
    locked.broker.restart()
    pid_file = locked.files.conf.parent / "mosquitto.pid"
    with tls_client(locked, stray.hex, user=stray.hex, password="stray-password") as (dev, _):
        assert dev.wait_connected(10)
        argv = ["revoke", stray.hex, "--hub-config", str(hub_toml),
                "--broker-pid-file", str(pid_file)]  # fmt: skip
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert f"hub: failed: device {stray} is not enrolled" in out
        assert "broker password: done: removed" in out
        assert "broker reload: done" in out
        assert "incomplete; left to do: fix the hub's store (or --hub-config)" in err
        wait_until(lambda: not dev.connected, 10, what="the stray device to be dropped")
    assert stray.hex not in locked.files.passwd.read_text()


def test_without_a_reload_the_broker_still_admits_a_revoked_device(
    setup: tuple[Path, LockedBroker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What the guide warns of: mosquitto reads its password file only at start and reload.
    hub_toml, locked = setup
    out = tmp_path / "wearable-06"
    pid_file = locked.files.conf.parent / "mosquitto.pid"
    assert provision(hub_toml, out, "--broker-pid-file", str(pid_file)) == 0
    cfg = load_device_config(on_this_machine(out))
    wait_until(lambda: connects(locked, cfg.device_id, cfg.mqtt_password(), out / "ca.pem"),
               10, what="the reload (SIGHUP is asynchronous) to admit the device")  # fmt: skip
    assert main(["revoke", cfg.device_id.hex, "--hub-config", str(hub_toml)]) == 0
    assert "broker reload: skipped: no --broker-pid-file" in capsys.readouterr().out
    assert hub_record(tmp_path, cfg.device_id).revoked
    assert cfg.device_id.hex not in locked.files.passwd.read_text()
    assert connects(locked, cfg.device_id, cfg.mqtt_password(), out / "ca.pem")
    assert main(["revoke", cfg.device_id.hex, "--hub-config", str(hub_toml),
                 "--broker-pid-file", str(pid_file)]) == 0  # fmt: skip
    wait_until(lambda: not connects(locked, cfg.device_id, cfg.mqtt_password(), out / "ca.pem"),
               10, what="the reloaded broker to refuse the device")  # fmt: skip


def test_revoke_with_a_wrong_pid_file_revokes_at_the_hub_and_says_what_is_left(
    setup: tuple[Path, LockedBroker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_toml, locked = setup
    out = tmp_path / "wearable-07"
    assert provision(hub_toml, out) == 0
    cfg = load_device_config(on_this_machine(out))
    capsys.readouterr()
    wrong = tmp_path / "no-such-mosquitto.pid"
    argv = ["revoke", cfg.device_id.hex, "--hub-config", str(hub_toml),
            "--broker-pid-file", str(wrong)]  # fmt: skip
    assert main(argv) == 1
    printed, err = capsys.readouterr()
    lines = printed.splitlines()
    assert lines[0] == "hub: done: revoked: the hub refuses its messages"
    assert lines[1] == "broker password: done: removed"
    assert lines[2].startswith(f"broker reload: failed: cannot reload the broker from {wrong}")
    assert len(lines) == 3
    assert err.count("\n") == 1
    assert "incomplete; left to do: reload mosquitto" in err
    assert hub_record(tmp_path, cfg.device_id).revoked  # the hub went first
    assert cfg.device_id.hex not in locked.files.passwd.read_text()
    # Finishing the job is running it again with the right pid file.
    pid_file = locked.files.conf.parent / "mosquitto.pid"
    argv[-1] = str(pid_file)
    assert main(argv) == 0
    assert "broker password: done: none was found" in capsys.readouterr().out
