"""Hub ingest rate: messages/s through decode + verify + store (+ handler and receipt),
against a bare baseline of raw SQLite inserts with the same durability, in the same run.

Every accepted uplink costs one HPKE open, one Ed25519 verify, and durable
commits (WAL, synchronous=FULL: an ACK promises the message is on disk). The
baseline commits one 580-byte row per transaction in the same mode, so the
ratio shows what Vigil adds on top of the disk.

    .venv/bin/python -m bench.hub_ingest [N]
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import BrokerConfig, HubConfig
from vigil.hub.daemon import HubService
from vigil.hub.pipeline import Uplink, decode
from vigil.hub.store import Store, open_store
from vigil.runtime.config import MqttConfig
from vigil.wire import AgedFix, DeviceId, DeviceKeys, Fix, Heartbeat, HubKeys, Message, seal_uplink
from vigil.wire.liveness import Epoch
from vigil.wire.topics import up_topic

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


class _NullTransport:
    """Accepts every publish (receipts are sealed, not sent): the broker is not measured."""

    connected = True

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        pass


def _envelopes(n: int) -> tuple[HubKeys, DeviceId, DeviceKeys, list[bytes]]:
    hub, device, device_id = HubKeys.generate(), DeviceKeys.generate(), DeviceId.generate()
    public = hub.public()
    epoch, fix = Epoch.generate(), AgedFix(Fix(lat=52.52, lon=13.405, satellites=8), age=3.0)
    beat = Heartbeat(battery=80, fix=fix, signal=70)
    msgs = [Message(seq=i, body=beat, epoch=epoch) for i in range(n)]
    envs = [seal_uplink(m, device_id=device_id, device_keys=device, hub=public) for m in msgs]
    return hub, device_id, device, envs


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:9.0f} msg/s  ({seconds / n * 1e6:8.1f} us/msg)"


def _baseline(db: Path, envelopes: list[bytes]) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE raw (device TEXT, seq INTEGER, payload BLOB, PRIMARY KEY (device, seq))"
    )
    start = time.perf_counter()
    for seq, env in enumerate(envelopes):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO raw VALUES (?, ?, ?)", ("d", seq, env))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def _config(url: str, keys: Path) -> HubConfig:
    return HubConfig(keys.parent / "hub.toml", keys, url, MqttConfig("127.0.0.1"),
                     BrokerConfig("127.0.0.1"))  # fmt: skip


def _enrolled(url: str, device_id: DeviceId, device: DeviceKeys) -> Store:
    """A new store with the benchmark's device enrolled."""
    store = open_store(url, create=True)
    with store.transaction() as tx:
        tx.devices.enroll(device_id, label="bench", public_keys=device.public())
    return store


def main(n: int = 1000) -> None:
    hub, device_id, device, envs = _envelopes(n)
    topic = up_topic(device_id)
    with tempfile.TemporaryDirectory() as tmp:
        base = _baseline(Path(tmp) / "raw.db", envs)

        store = _enrolled(f"sqlite:///{tmp}/verify.db", device_id, device)
        with store.read() as tx:
            record = tx.devices.active(device_id)
        start = time.perf_counter()
        for env in envs:
            decode(topic, env, hub_keys=hub, registry=lambda _: record)
        verify_only = time.perf_counter() - start
        store.close()

        store = _enrolled(f"sqlite:///{tmp}/verify2.db", device_id, device)
        start = time.perf_counter()
        for env in envs:
            with store.transaction() as tx:  # one transaction per message, as the hub does
                up = decode(topic, env, hub_keys=hub, registry=tx.devices.active)
                assert isinstance(up, Uplink)  # noqa: S101 - a benchmark of valid input
                tx.uplinks.accept(device_id, up.message, received_at=time.time())
        verify_store = time.perf_counter() - start
        store.close()

        store = _enrolled(f"sqlite:///{tmp}/hub.db", device_id, device)
        service = HubService(_config(f"sqlite:///{tmp}/hub.db", Path(tmp) / "hub.key"),
                             store=store, hub_keys=hub, notifier=AppriseNotifier())  # fmt: skip
        service.transport = _NullTransport()
        start = time.perf_counter()
        for env in envs:
            service.handle(topic, env)
        full = time.perf_counter() - start
        with store.read() as tx:
            assert tx.uplinks.count() == n  # noqa: S101
        store.close()

    print(f"== hub ingest, {n} heartbeats, SQLite WAL synchronous=FULL ==")  # noqa: T201
    for name, secs in (
        ("baseline: raw INSERT, one commit per message", base),
        ("decode + verify only (no store; CPU cost)", verify_only),
        ("decode + verify + store (replay window)", verify_store),
        ("full handle: + handler + sealed `stored` receipt", full),
    ):
        print(f"{name:<52} {_rate(n, secs)}   ratio {secs / base:5.2f}x")  # noqa: T201
    _postgres(n, hub, device_id, device, envs)


def _postgres(n: int, hub: HubKeys, device_id: DeviceId, device: DeviceKeys,
              envs: list[bytes]) -> None:  # fmt: skip
    """The same on the local PostgreSQL (127.0.0.1:5432, db `test`), in a scratch schema."""
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        print(f"(PostgreSQL at {PG_URL} not reachable: skipped)")  # noqa: T201
        return
    schema = f"vigil_bench_{os.getpid()}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        admin.execute(f"CREATE TABLE {schema}.raw (device TEXT, seq BIGINT, payload BYTEA, "
                      "PRIMARY KEY (device, seq))")  # fmt: skip
        start = time.perf_counter()
        for seq, env in enumerate(envs):
            admin.execute(f"INSERT INTO {schema}.raw VALUES (%s, %s, %s)", ("d", seq, env))  # noqa: S608
        base = time.perf_counter() - start
        store = _enrolled(
            f"{PG_URL}?options={quote(f'-csearch_path={schema}')}", device_id, device
        )
        service = HubService(_config(PG_URL, Path("hub.key")), store=store, hub_keys=hub,
                             notifier=AppriseNotifier())  # fmt: skip
        service.transport = _NullTransport()
        topic = up_topic(device_id)
        start = time.perf_counter()
        for env in envs:
            service.handle(topic, env)
        full = time.perf_counter() - start
        store.close()
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    print(f"== hub ingest, {n} heartbeats, PostgreSQL (local, default fsync) ==")  # noqa: T201
    for name, secs in (
        ("baseline: raw INSERT, one commit per message", base),
        ("full handle: + handler + sealed `stored` receipt", full),
    ):
        print(f"{name:<52} {_rate(n, secs)}   ratio {secs / base:5.2f}x")  # noqa: T201


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
