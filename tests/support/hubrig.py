"""A running hub for tests: config on disk, real broker, real store, a driven clock,
and a test wearable that seals real uplinks and opens the hub's downlinks."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.support.broker import Broker
from tests.support.parties import EPOCH, parties
from tests.support.sinks import SmtpSink, WebhookSink
from tests.support.wait import wait_until
from vigil.errors import VigilError
from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import HubConfig, load_config
from vigil.hub.daemon import HubService
from vigil.hub.process import _enqueue, serve
from vigil.hub.store import open_store
from vigil.runtime.mqtt import MqttClient, MqttSettings
from vigil.wire import (
    Acknowledged,
    DeviceId,
    DeviceKeys,
    Message,
    Resolved,
    Stored,
    open_downlink,
    seal_uplink,
)
from vigil.wire.envelope import seal_uplink_payload
from vigil.wire.liveness import Epoch, uplink_digest
from vigil.wire.messages import encode_payload
from vigil.wire.replay import ReplayWindow, Verdict
from vigil.wire.topics import UP_FILTER, down_topic, shared_up_filter, up_topic

T0 = 1_764_000_000.0


@dataclass
class FakeClock:
    """The hub's clock, moved by the test."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_config(
    tmp_path: Path, *, broker: Broker, smtp: SmtpSink, hook: WebhookSink, extra: str = ""
) -> Path:
    """A hub config: tier 1 operators (email + webhook) at once, tier 2 partners at 120 s."""
    keys = tmp_path / "hub.key"
    if not keys.exists():
        parties().hub.save(keys)
    path = tmp_path / "hub.toml"
    path.write_text(f"""
[hub]
keys = "hub.key"
silent_after = 300
[store]
url = "sqlite:///hub.db"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "hub-test"
[escalation]
retry_attempts = 3
retry_backoff = 5
retry_max = 60
[[escalation.tiers]]
name = "operators"
delay = 0
channels = ["operators"]
[[escalation.tiers]]
name = "partners"
delay = 120
channels = ["partners"]
[channels.operators]
urls = ["{smtp.apprise_url("ops@vigil.test")}", "{hook.url("/operators")}"]
[channels.partners]
urls = ["{hook.url("/partners")}"]
[channels.public]
public = true
urls = ["{hook.url("/public")}"]
{extra}
""")
    return path


@dataclass
class Wearable:
    """A wearable stand-in that behaves like a version-2 device on the wire.

    It keeps one life (`epoch`), stamps every uplink it sends with that epoch and
    the newest nonce from the hub's verified downlinks, remembers each uplink's
    signed payload (a resend seals the same payload afresh), and takes a
    downlink only if it opens, is not a replay, names this epoch and, for a
    receipt, carries the digest of the uplink it answers (docs/protocol.md §4.3).
    Dropped downlinks are counted, never raised.
    """

    broker: Broker
    device_id: DeviceId
    keys: DeviceKeys
    epoch: Epoch = EPOCH
    downlinks: list[Message] = field(default_factory=list)
    bad_downlinks: int = 0  # did not open (forged, garbled, another device's)
    dropped_downlinks: list[str] = field(default_factory=list)  # opened, but not for us
    nonce: str | None = None  # the newest nonce of an accepted downlink: echoed in uplinks
    sent: dict[int, bytes] = field(default_factory=dict)  # seq -> signed payload
    client: MqttClient | None = None
    _window: ReplayWindow = field(default_factory=ReplayWindow)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            msg = open_downlink(
                payload,
                device_id=self.device_id,
                device_keys=self.keys,
                hub=parties().hub.public(),
            )
        except VigilError:
            with self._lock:
                self.bad_downlinks += 1
            return
        with self._lock:
            problem = self._problem(msg)
            if problem is not None:
                self.dropped_downlinks.append(problem)
                return
            self._window = self._window.accept(msg.seq)
            self.nonce = msg.nonce
            self.downlinks.append(msg)

    def _problem(self, msg: Message) -> str | None:
        if self._window.check(msg.seq) is not Verdict.ACCEPT:
            return f"downlink seq {msg.seq} replayed"
        if msg.epoch != self.epoch:
            return f"{msg.kind} for epoch {msg.epoch}, not {self.epoch}"
        body = msg.body
        if isinstance(body, Stored | Acknowledged | Resolved):
            seq = body.seq if isinstance(body, Stored) else body.alarm_seq
            payload = self.sent.get(seq)
            if payload is None or uplink_digest(payload) != body.digest:
                return f"{msg.kind} for seq {seq} names another message"
        return None

    def start(self) -> None:
        settings = MqttSettings("127.0.0.1", self.broker.port, f"dev-{self.device_id.hex[:8]}")
        self.client = MqttClient(
            settings, on_message=self._on_message, subscriptions=[down_topic(self.device_id)]
        )
        self.client.start()
        assert self.client.wait_connected(10)

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()

    def stamp(self, message: Message) -> Message:
        """`message` as this device would sign it now: its epoch, the newest nonce."""
        with self._lock:
            return replace(message, epoch=self.epoch, nonce=self.nonce)

    def seal(self, message: Message) -> bytes:
        """Seal `message` exactly as given (no stamping, nothing remembered)."""
        return seal_uplink(
            message, device_id=self.device_id, device_keys=self.keys, hub=parties().hub.public()
        )

    def send(self, message: Message) -> bytes:
        """Stamp, remember and publish `message`; return the envelope."""
        stamped = self.stamp(message)
        payload = encode_payload(stamped)
        with self._lock:
            self.sent[stamped.seq] = payload
        return self.resend(stamped.seq)

    def resend(self, seq: int) -> bytes:
        """Publish uplink `seq` again: the same signed payload in a new envelope."""
        with self._lock:
            payload = self.sent[seq]
        envelope = seal_uplink_payload(payload, device_id=self.device_id, device_keys=self.keys,
                                       hub=parties().hub.public())  # fmt: skip
        self.publish(envelope)
        return envelope

    def digest(self, seq: int) -> str:
        with self._lock:
            return uplink_digest(self.sent[seq])

    def publish(self, payload: bytes, topic: str | None = None) -> None:
        assert self.client is not None
        self.client.publish(topic or up_topic(self.device_id), payload)

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[Message]:
        def found() -> list[Message]:
            with self._lock:
                hits = [m for m in self.downlinks if m.kind == kind]
            return hits if len(hits) >= count else []

        return wait_until(found, timeout, what=f"{count} {kind} downlink(s)")


@contextmanager
def running_hub(
    config_path: Path,
    clock: FakeClock,
    *,
    store_url: str | None = None,
    connected: bool = True,
    **serve_options: Any,
) -> Iterator[HubService]:
    """Serve the hub from `config_path` in a thread, on `clock`, until the block ends.

    `connected=False` does not wait for the broker; `serve_options` go to `serve`.
    """
    config: HubConfig = load_config(config_path)
    store = open_store(store_url or config.store_url, create=True)
    service = HubService(
        config, store=store, hub_keys=parties().hub, notifier=AppriseNotifier(), clock=clock
    )
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    group = config.mqtt.shared_group
    client = MqttClient(
        config.mqtt.settings(),
        on_message=lambda t, p: _enqueue(inbox, t, p),
        subscriptions=[shared_up_filter(group) if group else UP_FILTER],
    )
    client.start()
    assert client.wait_connected(10) or not connected
    stop = threading.Event()
    options = {"interval": 0.05, "tick": 0.1, "instance": config.mqtt.client_id or "hub"}
    thread = threading.Thread(
        target=serve, args=(service, client, inbox, stop), kwargs=options | serve_options
    )
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(timeout=15)
        client.stop()
        store.close()


@contextmanager
def wearable(broker: Broker, *, other: bool = False, epoch: Epoch = EPOCH) -> Iterator[Wearable]:
    p = parties()
    device = Wearable(broker, p.other_id if other else p.device_id, p.other if other else p.device,
                      epoch=epoch)  # fmt: skip
    device.start()
    try:
        yield device
    finally:
        device.stop()
