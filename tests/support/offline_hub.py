"""A hub service the test drives without a broker: its config, its store with both test
devices enrolled, and uplinks sealed by those devices for it to handle."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.support.broker import Broker
from tests.support.hubrig import FakeClock, write_config
from tests.support.parties import parties
from tests.support.peek import peek, write
from tests.support.sinks import SmtpSink, WebhookSink, smtp_sink, webhook_sink
from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import HubConfig, load_config
from vigil.hub.daemon import HubService
from vigil.hub.store import Store, Transaction
from vigil.wire import DeviceId, DeviceKeys, Message, open_downlink, seal_uplink
from vigil.wire.topics import down_topic, up_topic


def offline_config(
    tmp_path: Path, url: str, *, smtp: SmtpSink | None = None, hook: WebhookSink | None = None
) -> HubConfig:
    """The test hub's config (`write_config`) on the store at `url`; no broker listens at
    its MQTT address, so downlinks leave only through a transport the test sets. Without
    `smtp` and `hook` its channels name sinks closed again at once (no notice is sent)."""
    if smtp is None or hook is None:
        with smtp_sink() as mail, webhook_sink() as web:
            return offline_config(tmp_path, url, smtp=mail, hook=web)
    broker = Broker("127.0.0.1", 1, tmp_path / "unused.conf")
    config = load_config(write_config(tmp_path, broker=broker, smtp=smtp, hook=hook))
    return replace(config, store_url=url)


def offline_service(
    config: HubConfig, store: Store, clock: FakeClock, *,
    rand: Callable[[], float] = random.random,
) -> HubService:  # fmt: skip
    """A hub service with the test hub's keys, on `store` and the test's clock."""
    return HubService(config, store=store, hub_keys=parties().hub, notifier=AppriseNotifier(),
                      clock=clock, rand=rand)  # fmt: skip


def enroll_both(store: Store, now: float) -> None:
    """Enrol the two test devices, as Ana and Bea, at `now`."""
    p = parties()
    for device_id, label, keys in ((p.device_id, "Ana", p.device), (p.other_id, "Bea", p.other)):
        write(store, functools.partial(_enroll, device_id, label, keys, now=now))


def _enroll(
    device_id: DeviceId, label: str, keys: DeviceKeys, tx: Transaction, *, now: float
) -> None:
    tx.devices.enroll(device_id, label=label, public_keys=keys.public(), now=now)


def seal(message: Message, *, signer: DeviceKeys | None = None) -> bytes:
    """An uplink from the first test device (signed by `signer` instead: a forgery)."""
    p = parties()
    return seal_uplink(message, device_id=p.device_id, device_keys=signer or p.device,
                       hub=p.hub.public())  # fmt: skip


def up(message: Message, *, other: bool = False) -> tuple[str, bytes]:
    """The topic and envelope of an uplink from the first test device, or the `other`."""
    p = parties()
    device_id, keys = (p.other_id, p.other) if other else (p.device_id, p.device)
    envelope = seal_uplink(message, device_id=device_id, device_keys=keys, hub=p.hub.public())
    return up_topic(device_id), envelope


def receipts_for(service: HubService) -> list[tuple[int, str | None, str | None]]:
    """The uplink seq, epoch and digest of each `stored` receipt waiting in the store."""
    pending = peek(service.store, lambda tx: tx.downlinks.pending())
    return [(d.arg, d.epoch, d.digest) for d in pending if d.kind == "stored"]


@dataclass
class RecordingTransport:
    """Stands in for the broker link: keeps what the hub published, in order."""

    connected: bool = True
    published: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.published.append((topic, payload))


def published_receipts(service: HubService) -> list[tuple[str, int]]:
    """(device id, uplink seq) of every receipt the service published, in order."""
    assert isinstance(service.transport, RecordingTransport)
    p = parties()
    keys = {down_topic(p.device_id): (p.device_id, p.device),
            down_topic(p.other_id): (p.other_id, p.other)}  # fmt: skip
    out = []
    for topic, envelope in service.transport.published:
        device_id, device_keys = keys[topic]
        msg = open_downlink(envelope, device_id=device_id, device_keys=device_keys,
                            hub=p.hub.public())  # fmt: skip
        out.append((device_id.hex, msg.body.seq))  # type: ignore[union-attr]
    return out
