"""Hub ingest for a fleet: 10,000 enrolled devices, batches as the ingest worker takes them.

Compares, in one run, the full pipeline (`HubService.handle_batch`: open, verify,
store with one durable commit per batch, handlers, sealed `stored` receipts)
with its floor, the crypto alone (open + verify + seal a receipt, no database),
on a fresh store and again after `--history` stored messages (growth with
history). The broker is not measured (receipts are sealed, not sent).

    .venv/bin/python -m bench.hub_fleet [--devices 10000] [--messages 5000]
        [--history 1000000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import BrokerConfig, HubConfig
from vigil.hub.daemon import HubService
from vigil.hub.ingest import MAX_BATCH
from vigil.hub.pipeline import Uplink, decode
from vigil.hub.process import TICK
from vigil.hub.store import DeviceRecord, Store, open_store
from vigil.runtime.config import MqttConfig
from vigil.wire import AgedFix, DeviceId, DeviceKeys, Fix, Heartbeat, HubKeys, Message, seal_uplink
from vigil.wire.envelope import seal_downlink
from vigil.wire.liveness import Epoch, NonceMinter
from vigil.wire.messages import ClockSource, Stored
from vigil.wire.topics import up_topic


class NullTransport:
    """Accepts every publish (receipts are sealed, not sent): the broker is not measured."""

    connected = True

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        pass


@dataclass
class Fleet:
    hub: HubKeys
    devices: list[tuple[DeviceId, DeviceKeys, Epoch]]
    next_seq: list[int]

    @classmethod
    def make(cls, n: int) -> Fleet:
        keys = DeviceKeys.generate()  # one key pair for all: keygen is not what is measured
        devices = [(DeviceId.generate(), keys, Epoch.generate()) for _ in range(n)]
        return cls(HubKeys.generate(), devices, [0] * n)

    def envelopes(self, count: int, *, order: list[int] | None = None) -> list[tuple[str, bytes]]:
        """`count` heartbeats (with a fix and a nonce echo) from devices in `order` or random."""
        minter, public = NonceMinter(self.hub.nonce_secret()), self.hub.public()
        fix = AgedFix(Fix(lat=52.52, lon=13.405, satellites=8), age=3.0)
        out = []
        picks = order or [random.randrange(len(self.devices)) for _ in range(count)]  # noqa: S311
        for i in picks[:count]:
            device_id, keys, epoch = self.devices[i]
            seq, self.next_seq[i] = self.next_seq[i], self.next_seq[i] + 1
            nonce = minter.mint(device_id, at=time.time())
            body = Heartbeat(battery=80, fix=fix, signal=70)
            msg = Message(seq=seq, body=body, epoch=epoch, nonce=nonce)
            env = seal_uplink(msg, device_id=device_id, device_keys=keys, hub=public)
            out.append((up_topic(device_id), env))
        return out


def hub_config(url: str, folder: Path) -> HubConfig:
    return HubConfig(folder / "hub.toml", folder / "hub.key", url, MqttConfig("127.0.0.1"),
                     BrokerConfig("127.0.0.1"))  # fmt: skip


def _enrolled(url: str, fleet: Fleet) -> Store:
    store = open_store(url, create=True)
    with store.transaction() as tx:
        for device_id, keys, _ in fleet.devices:
            tx.devices.enroll(device_id, label="bench", public_keys=keys.public(), now=time.time())
    return store


def floor(hub: HubKeys, records: Mapping[DeviceId, DeviceRecord],
          messages: Sequence[tuple[str, bytes]]) -> float:  # fmt: skip
    """Seconds for open + verify + seal a receipt per message: the crypto alone."""
    minter = NonceMinter(hub.nonce_secret())
    start = time.perf_counter()
    for topic, env in messages:
        up = decode(topic, env, hub_keys=hub, registry=records.__getitem__)
        assert isinstance(up, Uplink)  # noqa: S101 - a benchmark of valid input
        now = time.time()
        receipt = Message(seq=1, body=Stored(up.message.seq, "00" * 16), sent_at=now,
                          clock=ClockSource.NTP, epoch=up.message.epoch,
                          nonce=minter.mint(up.device_id, at=now))  # fmt: skip
        seal_downlink(receipt, device_id=up.device_id, hub_keys=hub,
                      device=records[up.device_id].public_keys)  # fmt: skip
    return time.perf_counter() - start


def full(service: HubService, messages: Sequence[tuple[str, bytes]]) -> float:
    """Seconds for the hub's own ingest (`handle_batch`) of `messages`, MAX_BATCH at a time
    as the ingest worker takes them under load."""
    start = time.perf_counter()
    for i in range(0, len(messages), MAX_BATCH):
        service.handle_batch(messages[i : i + MAX_BATCH])
    return time.perf_counter() - start


@contextmanager
def ticking(service: HubService, every: float = TICK) -> Iterator[None]:
    """The hub's timer beside the measured ingest, as `vigil-hub run` has it (its periodic
    work: the store's log checkpoint among it)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            service.tick()

    timer = threading.Thread(target=loop, name="bench-timer", daemon=True)
    timer.start()
    try:
        yield
    finally:
        stop.set()
        timer.join()


@dataclass(frozen=True)
class Paired:
    """Rounds of the floor and the hub taken in turn: each one's median rate (msg/s), and
    the median of the rounds' own ratios, hub / floor (each round beside its floor, so
    the shared machine's drift between rounds cancels out of it)."""

    floor: float
    full: float
    ratio: float


def interleaved(
    service: HubService, hub: HubKeys, records: Mapping[DeviceId, DeviceRecord],
    messages: Sequence[tuple[str, bytes]], rounds: int,
) -> Paired:  # fmt: skip
    """The floor and the hub over `messages` split in `rounds`, taken in turn. The floor
    opens the same envelopes the hub then handles."""
    floors, fulls = [], []
    per_round = len(messages) // rounds
    for r in range(rounds):
        msgs = messages[r * per_round : (r + 1) * per_round]
        before = service.accepted
        floors.append(per_round / floor(hub, records, msgs))
        fulls.append(per_round / full(service, msgs))
        assert service.accepted - before == per_round, service.rejected  # noqa: S101
    ratios = [u / f for f, u in zip(floors, fulls, strict=True)]
    return Paired(statistics.median(floors), statistics.median(fulls), statistics.median(ratios))


def add_history(store: Store, fleet: Fleet, rows: int) -> None:
    """`rows` old uplinks and sent receipts, as a hub that ran for months would have."""
    chunk = 20_000
    with store.transaction() as tx:
        cur = tx.uplinks._cur  # bulk filler, not the hub's own path
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ids = range(start, start + n)
            picks = [(k, fleet.devices[k % len(fleet.devices)]) for k in ids]
            cur.executemany(
                "INSERT INTO uplinks (device_id, epoch, seq, kind, payload, digest, received_at, "
                "processed) VALUES (?, ?, ?, 'heartbeat', ?, ?, 1.0, 1)",
                [(d.hex, "ffffffffffffffff", k, b"x" * 100, "00" * 16) for k, (d, _, _) in picks],
            )
            cur.executemany(
                "INSERT INTO downlinks (device_id, seq, kind, arg, created_at, epoch, digest, "
                "sent_at) VALUES (?, ?, 'stored', ?, 1.0, 'ffffffffffffffff', ?, ?)",
                [(d.hex, -1 - k, k, "00" * 16, time.time()) for k, (d, _, _) in picks],
            )


def measure(service: HubService, fleet: Fleet, messages: int, rounds: int) -> Paired:
    records = {d: DeviceRecord(d, "bench", k.public()) for d, k, _ in fleet.devices}
    return interleaved(service, fleet.hub, records, fleet.envelopes(messages), rounds)


def run(name: str, url: str, fleet: Fleet, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = _enrolled(url.format(tmp=tmp), fleet)
        service = HubService(hub_config(url, Path(tmp)), store=store, hub_keys=fleet.hub,
                             notifier=AppriseNotifier())  # fmt: skip
        service.transport = NullTransport()
        n = len(fleet.devices)
        full(service, fleet.envelopes(n, order=list(range(n))))  # every device's first word
        with ticking(service):
            fresh = measure(service, fleet, args.messages, args.rounds)
        line = (f"{name:<10} {n:,} devices, fresh store: floor {fresh.floor:6.0f} msg/s, "
                f"full {fresh.full:6.0f} msg/s = {fresh.ratio:4.2f}x the floor")  # fmt: skip
        print(line)  # noqa: T201
        if args.history:
            add_history(store, fleet, args.history)
            with ticking(service):
                old = measure(service, fleet, args.messages, args.rounds)
            line = (f"{name:<10} after {args.history:,} stored: floor {old.floor:6.0f} msg/s, "
                    f"full {old.full:6.0f} msg/s = {old.ratio:4.2f}x the floor, "
                    f"{old.ratio / fresh.ratio:4.2f}x the fresh ratio")  # fmt: skip
            print(line)  # noqa: T201
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL URL for an empty database or schema")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    fleet = Fleet.make(args.devices)
    if not args.skip_sqlite:
        run("SQLite", "sqlite:///{tmp}/hub.db", fleet, args)
    if args.postgres:
        run("PostgreSQL", args.postgres, fleet, args)


if __name__ == "__main__":
    main()
