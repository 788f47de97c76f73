"""A real hub service and a real device daemon, wired through the attacker's broker.

Everything runs in the test's thread on one driven clock: the device daemon's
main loop (`run_due`), the hub's ingest (`handle`) and its periodic work
(`tick`), and the broker's delayed deliveries. Only the pins are fake (the
daemon is given events, as gpiozero's callbacks would); the store is a real
SQLite file, keys and envelopes are real.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.adversary.hostile_broker import HostileBroker
from tests.support.device_setup import ProvisionedDevice, make_device
from tests.support.parties import parties
from vigil.device.config import load_config
from vigil.device.core import ButtonPressed, ButtonReleased, Pattern, TamperOpened
from vigil.device.daemon import Daemon
from vigil.device.outbox import Outbox
from vigil.errors import DecryptionFailed
from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import load_config as load_hub_config
from vigil.hub.daemon import HubService
from vigil.hub.store import Alert, AlertKind, open_store
from vigil.wire.envelope import PrivateKem, open_downlink, open_uplink
from vigil.wire.keys import Suite
from vigil.wire.messages import Kind, Message

T0 = 1_764_000_000.0
HEARTBEAT = 60.0  # the device's heartbeat interval in these tests
SILENT_AFTER = 200.0  # the hub's deadline: more than two (jittered) heartbeat intervals
HUB_TICK = 5.0  # the hub's periodic work runs this often


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class DeviceClock:
    """The wearable's idea of wall time: synchronised or not, and off by `offset` seconds."""

    synced: bool = True
    offset: float = 0.0

    def wall(self, now: float) -> float:
        return now + self.offset


@dataclass
class Wearer:
    """What the wearer feels: every pattern the device played, in order."""

    felt: list[Pattern] = field(default_factory=list)

    def play(self, pattern: Pattern) -> None:
        self.felt.append(pattern)


@dataclass
class Rig:
    clock: Clock
    broker: HostileBroker
    hub: HubService
    device: Daemon
    wearer: Wearer
    provisioned: ProvisionedDevice
    state_dir: Path
    device_alive: bool = True
    _next_hub_tick: float = T0
    # Every downlink key the device held (it deletes old ones), for the test's oracle only.
    kems: list[Mapping[Suite, PrivateKem]] = field(default_factory=list)

    # -- time ----------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, running everything that falls due, in time order."""
        end = self.clock.now + seconds
        while True:
            self._settle()
            upcoming = [end, self._next_hub_tick, *self._device_deadlines()]
            upcoming += [at for at, _, _ in self.broker._delayed]
            nxt = min(t for t in upcoming if t > self.clock.now - 1e-9)
            if nxt > end:
                break
            self.clock.now = max(self.clock.now, nxt)
            if self.clock.now >= end:
                self._settle()
                break

    def _device_deadlines(self) -> list[float]:
        if not self.device_alive:
            return []
        times = [self.device.core.next_deadline(), self.device.outbox.next_retry()]
        return [t for t in times if t is not None]

    def _settle(self) -> None:
        """Run what is due now: delayed packets, the device loop, the hub's timer."""
        for _ in range(50):
            moved = self.broker.pump()
            if self.device_alive:
                self._note_keys()
                self.device.run_due()
                self._note_keys()
            if self.clock.now >= self._next_hub_tick:
                self.hub.tick()
                self._next_hub_tick = self.clock.now + HUB_TICK
                moved += 1
            if not moved:
                return

    # -- the wearer's hands ------------------------------------------------------------

    def hold(self) -> None:
        """Hold the panic button long enough for an alarm."""
        self.device.post(ButtonPressed(self.clock.now))
        self.advance(self.device.cfg.alarm.hold_seconds + 0.1)
        self.device.post(ButtonReleased(self.clock.now))
        self.advance(0.1)

    def gesture(self, marks: str) -> None:
        """Press out a gesture: '.' a short press, '-' a long one, quick gaps between."""
        cfg = self.device.cfg.alarm
        for mark in marks:
            self.device.post(ButtonPressed(self.clock.now))
            self.advance(0.1 if mark == "." else cfg.long_press_seconds + 0.1)
            self.device.post(ButtonReleased(self.clock.now))
            self.advance(0.2)
        self.advance(cfg.gap_seconds + 0.1)

    def cancel(self) -> None:
        self.gesture(self.device.cfg.alarm.cancel)

    def destroy_device(self) -> None:
        """The wearable is smashed: it says nothing more, ever."""
        self.device_alive = False
        self.broker._subscribers["down"].clear()

    def tamper(self) -> None:
        self.device.post(TamperOpened(self.clock.now))
        self.advance(self.device.cfg.alarm.tamper_debounce + 0.1)

    # -- what each side knows ---------------------------------------------------------

    def alerts(self, kind: AlertKind | None = None) -> list[Alert]:
        with self.hub.store.read() as tx:
            found = tx.alerts.all()
        return [a for a in found if kind is None or a.kind is kind]

    def audit(self) -> list[str]:
        with self.hub.store.read() as tx:
            return [e.action for e in tx.audit.entries()]

    def uplinks(self, kind: Kind | None = None) -> list[Message]:
        """Every uplink the device published, opened with the hub's key (the attacker can't)."""
        p = self.provisioned
        out = []
        for packet in self.broker.sent("up"):
            message = open_uplink(packet.payload, device_id=p.device_id, hub_keys=p.hub_keys,
                                  lookup=lambda _: p.device_keys.public().signing)  # fmt: skip
            if kind is None or message.kind is kind:
                out.append(message)
        return out

    def _note_keys(self) -> None:
        for keys in self.device.keyring.candidates():
            if keys not in self.kems:
                self.kems.append(keys)

    def downlinks(self) -> list[Message]:
        """Every downlink the hub published, opened with whichever key the device held."""
        return [self.open_downlink(packet.payload) for packet in self.broker.sent("down")]

    def open_downlink(
        self, payload: bytes, keys: list[Mapping[Suite, PrivateKem]] | None = None
    ) -> Message:
        p = self.provisioned
        for candidate in keys if keys is not None else self.kems:
            try:
                return open_downlink(payload, device_id=p.device_id, device_keys=candidate,
                                     hub=p.hub_keys.public())  # fmt: skip
            except DecryptionFailed:
                continue
        raise DecryptionFailed("no key the device held opens this downlink")


def write_hub_config(folder: Path, *, extra: str = "") -> Path:
    """A hub config for the rig: SQLite store, one operators tier (nothing is delivered)."""
    path = folder / "hub.toml"
    path.write_text(f"""
[hub]
keys = "hub.key"
silent_after = {SILENT_AFTER}
risk_silent_after = 90
[store]
url = "sqlite:///hub.db"
[mqtt]
host = "127.0.0.1"
port = 1
[[escalation.tiers]]
name = "operators"
delay = 0
channels = ["operators"]
[channels.operators]
urls = ["json://127.0.0.1:9/never"]
{extra}
""")
    return path


@contextmanager
def rig(
    tmp_path: Path,
    *,
    seed: int = 1,
    broker: HostileBroker | None = None,
    device_clock: DeviceClock | None = None,
    alarm: dict[str, object] | None = None,
    device: dict[str, object] | None = None,
    hybrid: bool = False,
) -> Iterator[Rig]:
    """A hub and one enrolled wearable behind a hostile broker, at T0 (`alarm`, `device`:
    more of the device's `[alarm]` and `[device]` settings; `hybrid`: suite 2)."""
    clock = Clock()
    broker = broker or HostileBroker(clock)
    broker.clock = clock
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    parties().hub.save(hub_dir / "hub.key")
    config = load_hub_config(write_hub_config(hub_dir))
    store = open_store(config.store_url, create=True)
    provisioned = make_device(
        tmp_path / "device",
        hub_keys=parties().hub,
        overrides={
            "alarm": {"heartbeat_interval": HEARTBEAT, "undelivered_after": 30.0, **(alarm or {})},
            "device": device or {},
        },
        hybrid=hybrid,
    )
    with store.transaction() as tx:
        tx.devices.enroll(provisioned.device_id, label="Ana (test)",
                          public_keys=provisioned.device_keys.public(), now=clock.now)  # fmt: skip
    hub = HubService(config, store=store, hub_keys=parties().hub, notifier=AppriseNotifier(),
                     clock=clock)  # fmt: skip
    hub.transport = broker.transport()
    broker.subscribe("up", hub.handle)
    wearer = Wearer()
    device, outbox = start_device(provisioned, clock, wearer, broker, seed=seed,
                                  device_clock=device_clock)  # fmt: skip
    try:
        yield Rig(clock, broker, hub, device, wearer, provisioned, provisioned.state_dir)
    finally:
        outbox.close()
        store.close()


def start_device(
    provisioned: ProvisionedDevice,
    clock: Clock,
    wearer: Wearer,
    broker: HostileBroker,
    *,
    seed: int = 1,
    device_clock: DeviceClock | None = None,
) -> tuple[Daemon, Outbox]:
    """The real daemon on its real outbox, battery 80 %; NTP synchronised unless told."""
    cfg = load_config(provisioned.config_path)
    device_clock = device_clock or DeviceClock()
    flag = provisioned.config_path.parent / "ntp-synchronized"
    if device_clock.synced:
        flag.touch()
    jitter = random.Random(seed)  # noqa: S311 - reproducible jitter, not cryptography
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3", rand=jitter.random)
    device = Daemon(cfg, keys=provisioned.device_keys, outbox=outbox, feedback=wearer,
                    clock=clock, wall=lambda: device_clock.wall(clock()), ntp_flag=flag,
                    battery=lambda: 80,
                    link_quality=lambda: 70, notify=lambda _: True,
                    rand=jitter.random)  # fmt: skip
    device.attach(broker.transport())
    broker.subscribe("down", device.on_message)
    return device, outbox


def restart_device_with_new_state(r: Rig) -> Rig:
    """The card rewritten from the same device folder: same keys and id, an empty state dir."""
    r.device.outbox.close()
    for path in r.state_dir.iterdir():
        path.unlink()
    r.broker._subscribers["down"].clear()
    device, _ = start_device(r.provisioned, r.clock, r.wearer, r.broker, seed=7)
    r.device = device
    return r
