"""A minimal hub end for device tests: a real MQTT client that opens uplinks and signs downlinks.

It is not the hub (hub/ must not be imported by device tests): it decrypts with
`wire.open_uplink` using test hub keys, records every copy it receives, and can
answer with signed `stored` downlinks, automatically for the kinds you choose.
Like a version-2 hub, a receipt names the epoch and digest of the uplink it
answers and every downlink carries a fresh nonce (docs/protocol.md §4.3, §8).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.support.broker import Broker
from vigil.runtime.mqtt import MqttClient, MqttSettings
from vigil.wire.envelope import open_uplink, seal_downlink
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys, HubKeys
from vigil.wire.liveness import Epoch, NonceMinter, uplink_digest
from vigil.wire.messages import Body, DownlinkBody, Message, Stored, encode_payload
from vigil.wire.topics import UP_FILTER, down_topic, parse_topic


@dataclass
class HubEndpoint:
    broker: Broker
    hub_keys: HubKeys
    device_id: DeviceId
    device_public: DevicePublicKeys
    auto_store: frozenset[str] = frozenset()
    client_id: str = "test-hub"
    received: list[Message] = field(default_factory=list)
    epoch: Epoch | None = None  # the device's life, from its newest uplink
    empty: int = 0
    rejected: int = 0
    _down_seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: MqttClient | None = None
    _nonces: NonceMinter | None = None

    def __post_init__(self) -> None:
        self._nonces = NonceMinter(self.hub_keys.nonce_secret())

    def start(self) -> HubEndpoint:
        settings = MqttSettings(
            host=self.broker.host, port=self.broker.port, client_id=self.client_id
        )
        self._client = MqttClient(settings, on_message=self._on_message, subscriptions=[UP_FILTER])
        self._client.start()
        if not self._client.wait_connected(15):
            raise TimeoutError("test hub could not connect")
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client = None

    def _on_message(self, topic: str, payload: bytes) -> None:
        device_id, _ = parse_topic(topic)
        if not payload:
            with self._lock:
                self.empty += 1
            return
        try:
            message = open_uplink(
                payload,
                device_id=device_id,
                hub_keys=self.hub_keys,
                lookup=lambda _: self.device_public.signing,
            )
        except Exception:  # anything that does not open is counted, as the hub would
            with self._lock:
                self.rejected += 1
            return
        with self._lock:
            self.received.append(message)
            self.epoch = message.epoch
        if message.kind in self.auto_store:
            self.send(self.receipt(message.seq), epoch=message.epoch)

    # -- views ---------------------------------------------------------------------

    def copies(self, kind: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.received if kind is None or m.kind == kind]

    def unique(self, kind: str | None = None) -> dict[int, Message]:
        """Messages after dedup by seq (the hub's replay window does this).

        Every copy of one seq must be the same signed message (one digest).
        """
        out: dict[int, Message] = {}
        for m in self.copies(kind):
            if m.seq in out and out[m.seq] != m:
                raise AssertionError(f"seq {m.seq} was reused for a different message")
            out.setdefault(m.seq, m)
        return out

    def first_arrivals(self) -> list[Message]:
        seen: set[int] = set()
        order = []
        for m in self.copies():
            if m.seq not in seen:
                seen.add(m.seq)
                order.append(m)
        return order

    # -- downlinks -------------------------------------------------------------------

    def receipt(self, seq: int) -> Stored:
        """A `stored` for uplink `seq` as received: its digest (docs/protocol.md §7)."""
        (message,) = {m.seq: m for m in self.copies() if m.seq == seq}.values()
        return Stored(seq, uplink_digest(encode_payload(message)))

    def seal(
        self,
        body: DownlinkBody,
        *,
        hub_keys: HubKeys | None = None,
        seq: int | None = None,
        epoch: Epoch | None = None,
    ) -> bytes:
        """Seal `body` for the device's current epoch (or `epoch`), with a fresh nonce."""
        assert self._nonces is not None
        with self._lock:
            if seq is None:
                seq, self._down_seq = self._down_seq, self._down_seq + 1
            epoch = epoch or self.epoch
        if epoch is None:
            raise AssertionError("no uplink yet: which epoch would a downlink answer?")
        nonce = self._nonces.mint(self.device_id, at=time.time())
        return seal_downlink(
            Message(seq=seq, body=body, epoch=epoch, nonce=nonce),
            device_id=self.device_id,
            hub_keys=hub_keys or self.hub_keys,
            device=self.device_public,
        )

    def publish_raw(self, payload: bytes) -> None:
        assert self._client is not None
        self._client.publish(down_topic(self.device_id), payload)

    def send(self, body: Body, *, epoch: Epoch | None = None) -> bytes:
        envelope = self.seal(body, epoch=epoch)  # type: ignore[arg-type]
        self.publish_raw(envelope)
        return envelope

    def store(self, seq: int) -> bytes:
        """Answer uplink `seq` with its `stored`, as the hub would."""
        return self.send(self.receipt(seq))

    def store_all(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self.store(seq)
