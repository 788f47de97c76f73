"""The technician's guide, run as written (docs/technician.md): the installed commands, in
order, from nothing to a locked-down broker, an enrolled wearable and its SD image; then the
wearable's files as they sit on the card connect to that broker, and revocation cuts it off."""

from __future__ import annotations

import json
import os
import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import nmea_log
from tests.integration.test_sdimage import build_image, wheels
from tests.support.broker import Broker, running_mosquitto_conf
from tests.support.deployment import BIN, deploy, process, run
from tests.support.locked_broker import LockedBroker, tls_client
from tests.support.wait import wait_until
from vigil.provision.broker import BrokerFiles
from vigil.provision.certs import BrokerCerts
from vigil.provision.fat import FatPartition, boot_partition_offset
from vigil.wire import DeviceId
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Path, Broker]]:
    """Sections 1-2 of the guide: broker certificates and config, hub keys and config."""
    deployed = deploy(tmp_path)
    with running_mosquitto_conf(deployed.mosquitto_conf, deployed.port) as broker:
        yield tmp_path, broker


def test_guide_from_nothing_to_an_enrolled_wearable_on_a_card(
    deployment: tuple[Path, Broker], tmp_path: Path
) -> None:
    root, broker = deployment
    hub_toml = root / "hub.toml"
    # Section 3: one wearable; then reload mosquitto so it reads the new password.
    run("vigil-provision", "device", "--label", "A. (Oaxaca)", "--hub-config", hub_toml,
        "--out", root / "wearable-01")  # fmt: skip
    config = tomllib.loads((root / "wearable-01" / "device.toml").read_text())
    device_id = config["device"]["id"]
    assert device_id in run("vigil-hub", "--config", hub_toml, "devices")
    pid = int((root / "mosquitto" / "pid").read_text())
    os.kill(pid, signal.SIGHUP)  # what `systemctl reload mosquitto` does
    # Section 4: the SD card.
    image = build_image(tmp_path, trixie=True)
    psk = root / "psk.txt"
    psk.write_text("correct horse battery\n")
    run("vigil-provision", "sd-image", "--image", image, "--device", root / "wearable-01",
        "--wheels", wheels(tmp_path), "--wifi-ssid", "Office", "--wifi-psk-file", psk,
        "--wifi-country", "MX")  # fmt: skip
    card = on_the_card(image, tmp_path / "card")
    assert (card / "device.toml").read_text() == (root / "wearable-01" / "device.toml").read_text()
    # The wearable's credentials, as first boot will install them, reach the broker.
    mosq = root / "mosquitto"
    locked = LockedBroker(
        broker,
        BrokerCerts(card / "ca.pem", root / "broker" / "ca.key", mosq / "n/a", mosq / "n/a"),
        BrokerFiles(mosq / "mosquitto.conf", mosq / "acl", mosq / "passwd",
                    mosq / "hub-mqtt-password", mosq / "mosquitto.service.d-vigil.conf"),
    )  # fmt: skip
    password = (card / "mqtt-password").read_text().strip()
    with (
        tls_client(locked, "hub", user="vigil-hub", password=locked.hub_password,
                   subscriptions=("vigil/v1/+/up",)) as (hub, at_hub),
        tls_client(locked, device_id, user=device_id, password=password,
                   ca=card / "ca.pem") as (device, seen),
    ):  # fmt: skip
        assert hub.wait_connected(10)
        assert device.wait_connected(10)
        topic = up_topic(DeviceId.parse(device_id))
        wait_until(lambda: (device.publish(topic, b"hello"), at_hub.got(topic))[1], 10)
        # Revocation, as the guide says: the open connection is dropped, reconnects refused.
        run("vigil-provision", "revoke", device_id, "--hub-config", hub_toml,
            "--broker-pid-file", root / "mosquitto" / "pid")  # fmt: skip
        refused = lambda: any("authori" in r.lower() for r in seen.refusals)  # noqa: E731
        wait_until(refused, 15, what="the revoked wearable's reconnection to be refused")
        assert not device.connected
    assert "revoked" in run("vigil-hub", "--config", hub_toml, "devices")


def on_the_card(image: Path, folder: Path) -> Path:
    """Copy the wearable's files off the image's boot partition."""
    fat = FatPartition(image, boot_partition_offset(image))
    folder.mkdir()
    for name in ("device.toml", "mqtt-password", "ca.pem", "device.key"):
        data = fat.read(f"vigil/{name}")
        assert data is not None, name
        (folder / name).write_bytes(data)
    return folder


def on_this_machine(card: Path, state: Path) -> Path:
    """The card's device config with its on-device paths pointed at the copied files."""
    text = (card / "device.toml").read_text()
    for on_device, here in (
        ("/var/lib/vigil-device/device.key", card / "device.key"),
        ("/var/lib/vigil-device", state),
        ("/etc/vigil/mqtt-password", card / "mqtt-password"),
        ("/etc/vigil/ca.pem", card / "ca.pem"),
    ):
        text = text.replace(f'"{on_device}"', json.dumps(str(here)))
    (card / "mqtt-password").chmod(0o600)
    (card / "device.key").chmod(0o600)
    local = card / "local.toml"
    local.write_text(text)
    return local


def test_an_alarm_crosses_the_deployed_system(
    deployment: tuple[Path, Broker], tmp_path: Path
) -> None:
    """The real hub and the real wearable daemon, each with the config provisioning made,
    over the locked-down broker: the alarm is stored and the wearer gets the receipt."""
    root, _ = deployment
    hub_toml = root / "hub.toml"
    run("vigil-provision", "device", "--label", "B. (Chiapas)", "--hub-config", hub_toml,
        "--out", root / "wearable-02")  # fmt: skip
    os.kill(int((root / "mosquitto" / "pid").read_text()), signal.SIGHUP)
    image = build_image(tmp_path, trixie=False)
    run("vigil-provision", "sd-image", "--image", image, "--device", root / "wearable-02",
        "--wheels", wheels(tmp_path))  # fmt: skip
    card = on_the_card(image, tmp_path / "card")
    device_toml = on_this_machine(card, tmp_path / "state")
    device_log, hub_log = tmp_path / "device.log", tmp_path / "hub.log"
    with (
        process([BIN / "vigil-hub", "run", "--config", hub_toml], hub_log),
        process([BIN / "vigil-device", "simulate", "--config", device_toml,
                 "--nmea", nmea_log("gpsd-mt3339.log"), "--nmea-rate", "50"],
                device_log) as device,
    ):  # fmt: skip
        text = lambda: device_log.read_text(errors="replace")  # noqa: E731
        assert device.stdin is not None
        device.stdin.write(b"hold\n")
        device.stdin.flush()
        wait_until(lambda: " queued" in text(), 15, what="the alarm committed")
        wait_until(lambda: "stored by the hub" in text(), 30, what="the hub's receipt")
    alerts = run("vigil-hub", "--config", hub_toml, "alerts")
    assert "B. (Chiapas)" in alerts, alerts + hub_log.read_text(errors="replace")[-2000:]
