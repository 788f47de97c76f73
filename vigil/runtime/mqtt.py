"""The one module that owns paho-mqtt: MQTT v5, QoS 1, persistent sessions, TLS, a Will.

Device and hub depend on the small `Transport` protocol and on `MqttClient`,
never on paho directly. paho runs its network loop in its own thread
(`loop_start`), reconnects with exponential backoff, and retries the first
connection too, so a broker that is down at start is not an error: the
caller's durable outbox keeps the messages until `connected` is true again.

    client = MqttClient(settings, on_message=handle, subscriptions=[down_topic(dev)])
    client.start()
    client.publish(up_topic(dev), envelope)   # TransportError while disconnected
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from vigil.errors import BadConfigValue, TransportError

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for us if we vanish without a clean disconnect."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Where and how to connect. `tls_ca=None` means plain TCP: tests and demos only."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    keepalive: int = 30
    session_expiry: int = 7 * 86400
    clean_start: bool = False
    will: Will | None = None
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0

    def __post_init__(self) -> None:
        if not self.host:
            raise BadConfigValue("mqtt.host must not be empty")
        if not 0 < self.port < 65536:
            raise BadConfigValue(f"mqtt.port must be in 1..65535, got {self.port}")
        if not self.client_id or len(self.client_id) > 64:
            raise BadConfigValue("mqtt client id must be 1..64 characters")
        if not 5 <= self.keepalive <= 3600:
            raise BadConfigValue(f"mqtt.keepalive must be in 5..3600 s, got {self.keepalive}")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise BadConfigValue("mqtt reconnect delays must satisfy 0 < min <= max")


class Transport(Protocol):
    """What device and hub code need from a broker connection."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...


class MqttClient:
    """A paho-mqtt v5 client with the settings Vigil always wants.

    Callbacks (`on_message(topic, payload)`, `on_connection(up, reason)`) run on
    paho's network thread: keep them short and hand work to your own loop.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_message: Callable[[str, bytes], None],
        subscriptions: Sequence[str] = (),
        on_connection: Callable[[bool, str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_message_cb = on_message
        self._on_connection_cb = on_connection
        self._subscriptions = tuple(subscriptions)
        self._connected = threading.Event()
        self._pending_subscriptions: dict[int | None, str] = {}
        self._client = self._make_client()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; keep retrying with backoff until `stop()`."""
        s = self._settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry
        try:
            self._client.connect_async(
                s.host, s.port, keepalive=s.keepalive, clean_start=s.clean_start, properties=props
            )
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        if self._client.loop_start() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError("the MQTT network thread could not start")

    def stop(self) -> None:
        """Disconnect cleanly (the broker does not publish our Will) and stop the thread."""
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Hand one message to the broker; raise `TransportError` if we are not connected.

        We do not let paho queue while offline: the caller's outbox owns retries.
        """
        if not self.connected:
            raise TransportError(f"not connected to {self._settings.host}")
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic} failed: {paho.error_string(info.rc)}")

    # -- paho plumbing ---------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self._settings
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls_ca is not None:
            try:
                client.tls_set(ca_certs=str(s.tls_ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(f"cannot load TLS CA {s.tls_ca}: {exc}") from exc
        if s.will is not None:
            client.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
        client.reconnect_delay_set(
            min_delay=max(1, round(s.reconnect_min)), max_delay=max(1, round(s.reconnect_max))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            _LOG.warning("mqtt connect refused by %s: %s", self._settings.host, reason)
            self._notify(up=False, reason=str(reason))
            return
        for topic in self._subscriptions:
            _, mid = client.subscribe(topic, qos=1)
            self._pending_subscriptions[mid] = topic
        self._connected.set()
        _LOG.info(
            "mqtt connected to %s:%s session_present=%s",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        self._notify(up=True, reason=str(reason))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        if was_up:
            _LOG.warning("mqtt disconnected from %s: %s", self._settings.host, reason)
            self._notify(up=False, reason=str(reason))

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        topic = self._pending_subscriptions.pop(mid, "?")
        for reason in reasons:
            if reason.is_failure:
                _LOG.error("mqtt subscription to %s refused: %s", topic, reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._on_message_cb(msg.topic, bytes(msg.payload))
        except Exception:  # the network thread must survive any handler bug
            _LOG.exception("message handler failed for topic %s", msg.topic)

    def _notify(self, *, up: bool, reason: str) -> None:
        if self._on_connection_cb is None:
            return
        try:
            self._on_connection_cb(up, reason)
        except Exception:
            _LOG.exception("connection handler failed")
