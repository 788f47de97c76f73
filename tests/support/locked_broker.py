"""The production broker config (TLS only, passwords, ACL), rendered and started for tests."""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.broker import Broker, free_port, running_mosquitto_conf
from vigil.provision.broker import BrokerFiles, render_broker_config
from vigil.provision.certs import BrokerCerts, make_broker_certs
from vigil.runtime.mqtt import MqttClient, MqttSettings


@dataclass
class LockedBroker:
    broker: Broker
    certs: BrokerCerts
    files: BrokerFiles

    @property
    def hub_password(self) -> str:
        return self.files.hub_password.read_text().strip()


@dataclass
class Listener:
    """A client's received messages and connection refusals, filled on paho's thread."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def on_connection(self, up: bool, reason: str) -> None:
        if not up:
            with self.lock:
                self.refusals.append(reason)

    def got(self, topic: str) -> bool:
        with self.lock:
            return any(t == topic for t, _ in self.messages)


@contextmanager
def locked_broker(
    tmp_path: Path, *, more_hub_users: tuple[str, ...] = ()
) -> Iterator[LockedBroker]:
    certs = make_broker_certs(tmp_path / "certs", host="broker.vigil.test")
    port = free_port()
    files = render_broker_config(
        tmp_path / "conf", certs=certs, port=port, bind="127.0.0.1", run_as=getpass.getuser(),
        pid_file=tmp_path / "conf" / "mosquitto.pid", more_hub_users=more_hub_users,
    )  # fmt: skip
    with running_mosquitto_conf(files.conf, port) as broker:
        yield LockedBroker(broker, certs, files)


@contextmanager
def tls_client(
    locked: LockedBroker, client_id: str, *, user: str | None, password: str | None,
    subscriptions: tuple[str, ...] = (), ca: Path | None = None,
) -> Iterator[tuple[MqttClient, Listener]]:  # fmt: skip
    listener = Listener()
    settings = MqttSettings(
        host="127.0.0.1", port=locked.broker.port, client_id=client_id, username=user,
        password=password, tls_ca=ca or locked.certs.ca, reconnect_max=2,
    )  # fmt: skip
    client = MqttClient(settings, on_message=listener.on_message, subscriptions=subscriptions,
                        on_connection=listener.on_connection)  # fmt: skip
    client.start()
    try:
        yield client, listener
    finally:
        client.stop()
