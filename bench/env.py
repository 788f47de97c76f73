"""What the hub benchmarks share: a real mosquitto, a durable PostgreSQL, a webhook sink,
the hub's keys, 10,000 simulated wearables, and hubs started as real processes.

The responders' webhook sink runs in a process of its own (a responder's server is not
the wearer's device, whose daemon runs in the benchmark's own process). The broker runs
the shipped config's limits (queue, TCP_NODELAY, packet size) on a
plain loopback listener; PostgreSQL runs with fsync on, as in production.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.broker import Broker, running_mosquitto
from tests.support.fleet import SimDevice, Uplink, enrol, make_fleet
from tests.support.hubproc import HubProcess, HubSetup, write_hub_config
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.sinks import WebhookSink, webhook_sink_process
from vigil.hub.store import open_store
from vigil.runtime.mqtt import MqttClient, MqttSettings
from vigil.wire import HubKeys

# The shipped broker config's limits (broker/mosquitto.conf.template), without TLS and ACLs.
BROKER_CONF = """allow_anonymous true
max_queued_messages 100000
max_queued_bytes 268435456
set_tcp_nodelay true
max_packet_size 8192
"""


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: T201


@dataclass
class BenchEnv:
    work: Path
    broker: Broker
    postgres: PostgresServer
    hook: WebhookSink
    hub_keys: HubKeys
    keys_path: Path
    fleet: list[SimDevice]
    pools: dict[str, list[Uplink]] = field(default_factory=dict)  # sealed, for fresh stores
    _clients: dict[HubProcess, str] = field(default_factory=dict)  # running hub -> client id
    _names: Iterator[int] = field(default_factory=itertools.count)

    def name(self, stem: str) -> str:
        return f"{stem}-{next(self._names)}"

    def new_store(self, backend: str, devices: list[SimDevice] | None = None) -> str:
        """A new store URL on `backend` ("sqlite" or "postgresql") with the fleet enrolled."""
        name = self.name("store")
        if backend == "sqlite":
            url = f"sqlite:///{self.work / f'{name}.db'}"
        else:
            url = self.postgres.create_database(name.replace("-", "_"))
        store = open_store(url, create=True)
        try:
            enrol(store, self.fleet if devices is None else devices, now=time.time())
        finally:
            store.close()
        return url

    def hub(
        self,
        store_url: str,
        *,
        group: str | None = None,
        hook: bool = False,
        log_level: str = "INFO",
    ) -> HubProcess:
        """Start a `vigil-hub run` process on `store_url`; wait until it has subscribed."""
        name = self.name("hub")
        setup = HubSetup(
            self.keys_path,
            store_url,
            self.broker.port,
            shared_group=group,
            hook_url=f"json://127.0.0.1:{self.hook.port}" if hook else None,
            notices_per_minute=100_000,
        )
        config = write_hub_config(self.work / "hubs", setup, client_id=name)
        hub = HubProcess(config, log=self.work / f"{name}.log", log_level=log_level)
        hub.start()
        self._clients[hub] = name
        return hub

    def stop(self, hub: HubProcess) -> None:
        """Stop `hub` and end its broker session: a stopped hub's persistent session would
        otherwise queue every later uplink, and the broker's work would grow run by run."""
        hub.stop()
        settings = MqttSettings(
            "127.0.0.1",
            self.broker.port,
            self._clients.pop(hub),
            clean_start=True,
            session_expiry=0,
        )
        client = MqttClient(settings, on_message=lambda _t, _p: None)
        client.start()
        try:
            if not client.wait_connected(10):
                raise TimeoutError(f"could not end the session of {settings.client_id}")
        finally:
            client.stop()


@contextmanager
def bench_env(work: Path, *, devices: int) -> Iterator[BenchEnv]:
    with ExitStack() as stack:
        progress("starting mosquitto, a durable PostgreSQL and a webhook sink")
        broker = stack.enter_context(running_mosquitto(work / "broker", BROKER_CONF))
        postgres = stack.enter_context(running_postgres(durable=True))
        hook = stack.enter_context(webhook_sink_process())  # responders elsewhere
        hub_keys, keys_path = HubKeys.generate(), work / "hub.key"
        hub_keys.save(keys_path)
        progress(f"making {devices:,} simulated wearables (keys for each)")
        fleet = make_fleet(devices)
        yield BenchEnv(work, broker, postgres, hook, hub_keys, keys_path, fleet)
