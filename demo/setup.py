"""Make the demo's keys and configs with the same commands a technician uses."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from demo.processes import run
from tests.support.broker import Broker
from tests.support.sinks import SmtpSink, WebhookSink
from vigil.device.captures import PI_GPS_HAT
from vigil.wire import DeviceId, DeviceKeys

BIN = Path(sys.executable).parent
NMEA = PI_GPS_HAT  # ships with the package: a clone, or an installed copy, has it


@dataclass(frozen=True)
class DemoFiles:
    hub_config: Path
    device_config: Path
    device_id: DeviceId
    label: str
    nmea: Path


def prepare(work: Path, *, broker: Broker, smtp: SmtpSink, hook: WebhookSink) -> DemoFiles:
    """Hub keys and config, one enrolled wearable with its keys and config."""
    hub_dir, device_dir = work / "hub", work / "device"
    hub_public = run([str(BIN / "vigil-hub"), "keygen", "--out", str(hub_dir / "hub.key")])
    hub_config = hub_dir / "hub.toml"
    hub_config.write_text(_hub_toml(broker, smtp, hook))
    run([str(BIN / "vigil-hub"), "--config", str(hub_config), "init"])  # creates the store
    device_id, keys, label = DeviceId.generate(), DeviceKeys.generate(), "Demo wearer (Oaxaca)"
    keys.save(device_dir / "device.key")
    public = keys.public().to_text()
    run([str(BIN / "vigil-hub"), "--config", str(hub_config), "enroll",
         "--device-id", device_id.hex, "--label", label,
         "--signing", public["signing"], "--kem", public["kem"]])  # fmt: skip
    (device_dir / "capacity").write_text("87\n")  # a battery gauge, as sysfs shows one
    device_config = device_dir / "device.toml"
    device_config.write_text(_device_toml(device_id, device_dir, broker, hub_public))
    return DemoFiles(hub_config, device_config, device_id, label, NMEA)


def _hub_toml(broker: Broker, smtp: SmtpSink, hook: WebhookSink) -> str:
    return f"""\
[hub]
keys = "hub.key"
silent_after = 120

[store]
url = "sqlite:///hub.db"

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "vigil-hub-demo"

[channels.operators]
urls = ["{smtp.apprise_url("duty-operators@partner.test")}", "{hook.url("/operators")}"]

[channels.partners]
urls = ["{smtp.apprise_url("partner-org@partner.test")}"]

[[escalation.tiers]]
name = "on-duty operators"
delay = 0
channels = ["operators"]

[[escalation.tiers]]
name = "partner organisation"
delay = 120
channels = ["partners"]
"""


def _device_toml(device_id: DeviceId, folder: Path, broker: Broker, hub_public: str) -> str:
    hub_section = hub_public[hub_public.index("[hub]") :].strip()
    return f"""\
[device]
id = "{device_id.hex}"
keys = "{folder / "device.key"}"
state_dir = "{folder / "state"}"

{hub_section}
suite = "x25519"

[mqtt]
host = "{broker.host}"
port = {broker.port}
keepalive = 10

[alarm]
heartbeat_interval = 5
hold_seconds = 2.0

[battery]
capacity_path = "{folder / "capacity"}"
"""
