"""The one module that owns paho-mqtt: MQTT v5, QoS 1, persistent sessions, TLS, a Will.

Device and hub depend on the small `Transport` protocol and on `MqttClient`,
never on paho directly. paho runs its network loop in its own thread
(`loop_start`), reconnects with exponential backoff, and retries the first
connection too, so a broker that is down at start is not an error: the
caller's durable outbox keeps the messages until `connected` is true again.
It is not silent either: each failed attempt is logged with its reason (DNS,
refused, TLS, credentials) and the time of the next one, and `state` says
whether we are connected, or since when we have been trying and why it fails.
TCP_NODELAY is set on every socket: an ACK is one small packet that Nagle's
algorithm would otherwise hold back until the peer's delayed ACK (about 40 ms).

    client = MqttClient(settings, on_message=handle, subscriptions=[down_topic(dev)])
    client.start()
    client.publish(up_topic(dev), envelope)   # TransportError while disconnected
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import socket
import ssl
import sys
import threading
import time
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


class LinkStatus(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """Where the broker connection stands: for `stats`, logs and systemd's status line.

    `since` and `next_retry` are wall-clock times (seconds since the epoch);
    `failures` counts failed attempts since the last successful connect.
    """

    broker: str
    status: LinkStatus
    since: float
    failures: int = 0
    last_error: str | None = None
    next_retry: float | None = None

    def describe(self) -> str:
        """One line for a person: 'connecting to h:8883 since ... (3 failed; last: ...)'."""
        head = f"{self.status.value} {self._to()} {self.broker} since {_when(self.since)}"
        if self.status is not LinkStatus.CONNECTING or self.last_error is None:
            return head
        retry = f"; next retry {_when(self.next_retry)}" if self.next_retry else ""
        return f"{head} ({self.failures} failed, last: {self.last_error}{retry})"

    def _to(self) -> str:
        return "from" if self.status is LinkStatus.STOPPED else "to"


def _when(t: float | None) -> str:
    if t is None:
        return "?"
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


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
        self._subscribed = threading.Event()  # every subscription acknowledged (SUBACK)
        self._pending_subscriptions: dict[int | None, str] = {}
        self._broker = f"{settings.host}:{settings.port}"
        # Written on paho's thread, read anywhere: one immutable value, replaced whole.
        self._state = ConnectionState(self._broker, LinkStatus.STOPPED, since=time.time())
        self._retry_delay: float | None = None
        self._refusal: str | None = None
        self._stopping = False
        self._first_attempt = True
        self._client = self._make_client()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscribed(self) -> bool:
        """Connected, and the broker acknowledged every subscription (SUBACK) on this link."""
        return self._subscribed.is_set()

    @property
    def state(self) -> ConnectionState:
        """Connected, or connecting since when, with the last error and the next retry."""
        return self._state

    def start(self) -> None:
        """Connect in the background; keep retrying with backoff until `stop()`."""
        s = self._settings
        self._stopping, self._first_attempt = False, True
        self._state = ConnectionState(self._broker, LinkStatus.CONNECTING, since=time.time())
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
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._subscribed.clear()
        self._state = ConnectionState(self._broker, LinkStatus.STOPPED, since=time.time())

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

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
            client.tls_set_context(_tls_context(s.tls_ca))
        if s.will is not None:
            client.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
        self._delays = (max(1, round(s.reconnect_min)), max(1, round(s.reconnect_max)))
        client.reconnect_delay_set(min_delay=self._delays[0], max_delay=self._delays[1])
        client.on_socket_open = self._on_socket_open
        client.on_connect_fail = self._on_connect_fail
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
        if reason.is_failure:  # paho disconnects next; _on_disconnect logs it with the retry
            self._refusal = _refusal_reason(reason)
            self._notify(up=False, reason=str(reason))
            return
        self._pending_subscriptions.clear()
        for topic in self._subscriptions:
            _, mid = client.subscribe(topic, qos=1)
            self._pending_subscriptions[mid] = topic
        if not self._subscriptions:
            self._subscribed.set()
        self._retry_delay, self._first_attempt = None, False  # paho's backoff starts again
        self._state = ConnectionState(self._broker, LinkStatus.CONNECTED, since=time.time())
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
        self._subscribed.clear()
        if self._stopping:
            return
        if was_up:
            self._state = ConnectionState(self._broker, LinkStatus.CONNECTING, since=time.time())
            self._failed(f"disconnected: {reason}", verb="lost the connection to")
            self._notify(up=False, reason=str(reason))
        else:
            refusal, self._refusal = self._refusal, None
            self._failed(
                refusal or f"the broker closed the connection before accepting it: {reason}"
            )

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError:` block, which is how we learn why.
        reason = _failure_reason(sys.exception(), self._settings, client.connect_timeout)
        # When the very first attempt fails, paho's loop_forever waits twice (once in its
        # connect_async loop, once in its reconnect loop) before it tries again.
        self._failed(reason, waits=2 if self._first_attempt else 1)

    def _failed(self, reason: str, *, verb: str = "cannot connect to", waits: int = 1) -> None:
        """Record a failed attempt and log it with the time of the next one (paho's backoff:
        `reconnect_delay_set` documents the doubling from min to max, reset on CONNACK)."""
        self._first_attempt = False
        low, high = self._delays
        wait = 0.0
        for _ in range(waits):
            self._retry_delay = (
                low if self._retry_delay is None else min(2 * self._retry_delay, high)
            )
            wait += self._retry_delay
        now, old = time.time(), self._state
        since = old.since if old.status is LinkStatus.CONNECTING else now
        self._state = ConnectionState(
            self._broker, LinkStatus.CONNECTING, since, old.failures + 1, reason,
            now + wait,
        )  # fmt: skip
        _LOG.warning(
            "mqtt %s %s: %s; attempt %d failed, next retry in %.0f s at %s",
            verb, self._broker, reason, self._state.failures, wait,
            _when(self._state.next_retry),
        )  # fmt: skip

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:  # not fatal: the link works, only slower
                _LOG.warning("mqtt cannot set TCP_NODELAY: %s", exc)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        topic = self._pending_subscriptions.pop(mid, "?")
        refused = [reason for reason in reasons if reason.is_failure]
        for reason in refused:
            _LOG.error("mqtt subscription to %s refused: %s", topic, reason)
        if not refused and not self._pending_subscriptions and self._connected.is_set():
            self._subscribed.set()

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


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSLSocket that closes itself when its handshake fails.

    paho drops the socket of a failed handshake without closing it; with a broker
    that presents a wrong certificate every retry would leave one to the collector.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _tls_context(ca: Path) -> ssl.SSLContext:
    """Verify the broker against our CA only, host name included; TLS 1.2 at least."""
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load TLS CA {ca}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _ClosingSSLSocket
    return context


# Reason codes a CONNACK refuses with, and what the person reading the log can do.
_REFUSAL_HINTS = {
    0x85: "the broker refused the client id",
    0x86: "check mqtt.username and mqtt.password_file",
    0x87: "check mqtt.username and mqtt.password_file; is the device enrolled and not revoked?",
    0x88: "the broker is unavailable; retrying",
    0x89: "the broker is busy; retrying",
    0x8A: "this client is banned at the broker",
}


def _refusal_reason(reason: ReasonCode) -> str:
    hint = _REFUSAL_HINTS.get(reason.value)
    text = f"the broker refused us: {reason} (reason code {reason.value})"
    return f"{text}; {hint}" if hint else text


def _failure_reason(exc: BaseException | None, s: MqttSettings, timeout: float) -> str:
    """Say why a connect attempt failed, in words that point at the config key to check."""
    where = f"{s.host}:{s.port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name {s.host!r} ({exc.strerror}); check mqtt.host and DNS"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: nothing listens on {where}; check mqtt.port and the broker"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason
        return (
            f"TLS: the broker's certificate was rejected ({why}); check mqtt.tls_ca and mqtt.host"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc}); is {where} a TLS listener?"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {timeout:.0f} s; check the address and firewalls"
    detail = exc.strerror if isinstance(exc, OSError) else None
    return f"{where}: {detail or exc or 'unknown reason'}"
