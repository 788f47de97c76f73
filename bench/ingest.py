"""Hub ingest with 10,000 enrolled wearables: real `vigil-hub run` processes, real broker.

A simulated fleet publishes real v2 heartbeats (sealed before the clock starts)
with at most WINDOW unanswered, and counts the hub's `stored` receipts, so every
message was opened, verified, durably stored and answered with a sealed receipt.
The bare baseline is the crypto alone, in this process: open + verify the uplink,
mint a nonce and seal its receipt, no database.

The goal is per core ("≈ 2,000 msg/s per core"), so the figure is receipts per
CPU-second of the hub process and, on PostgreSQL, of the database server serving it
(its backends, WAL writer, checkpointer): what a core given to the hub handles.
The broker and the load generator share this machine's two cores with the hub, so
the wall-clock rate (also printed) measures the machine as much as the hub.

Figures: SQLite and PostgreSQL (fsync on) fresh; the same stores after 1 M stored
uplinks and 1 M sent receipts (bulk SQL, `bench.prefill`) against the fresh figure;
the hub's RSS with the fleet enrolled; two hubs in one shared subscription group on
one PostgreSQL against one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

from bench.env import BenchEnv, progress
from bench.prefill import prefill
from bench.results import Figure, Goal, Results
from tests.support.fleet import Fleet, Pumped, Uplink, heartbeats, make_fleet
from tests.support.hubproc import cpu_seconds, rss_mib
from tests.support.wait import wait_until
from vigil.wire import Message
from vigil.wire.envelope import open_uplink, seal_downlink
from vigil.wire.liveness import NonceMinter, uplink_digest
from vigil.wire.messages import ClockSource, Stored, encode_payload

RUN_SECONDS = 8.0  # per measured run; bounded by the pool too
POOL = 16_000  # heartbeats sealed per pool (two pools: fresh, then after the history)
WINDOW = 1000  # unanswered uplinks at most
HISTORY = 1_000_000
FLOOR_N = 1500


def crypto_floor(env: BenchEnv) -> float:
    """Messages per CPU-second of open + verify + nonce + seal receipt, no database, no broker."""
    devices = make_fleet(50)
    ups = heartbeats(devices, env.hub_keys.public(), count=FLOOR_N)
    signing = {d.device_id: d.keys.public().signing for d in devices}
    public = {d.device_id: d.keys.public() for d in devices}
    nonces = NonceMinter(env.hub_keys.nonce_secret())
    start = time.process_time()
    for up in ups:
        device_id = up.device.device_id
        msg = open_uplink(
            up.envelope, device_id=device_id, hub_keys=env.hub_keys, lookup=signing.__getitem__
        )
        now = time.time()
        receipt = Message(
            msg.seq,
            Stored(msg.seq, uplink_digest(encode_payload(msg))),
            now,
            ClockSource.NTP,
            epoch=msg.epoch,
            nonce=nonces.mint(device_id, at=now),
        )
        seal_downlink(
            receipt, device_id=device_id, hub_keys=env.hub_keys, device=public[device_id]
        )
    return FLOOR_N / (time.process_time() - start)


@dataclass(frozen=True)
class Measured:
    """One run: what the fleet saw, and the CPU the hub (and its database server) used."""

    pumped: Pumped
    cpu: float  # CPU-seconds of the hub processes (+ the PostgreSQL server) during the run

    @property
    def per_core(self) -> float:
        """Receipts per CPU-second: what one core given to the hub handles."""
        return self.pumped.receipted / self.cpu if self.cpu > 0 else 0.0


def measure(
    env: BenchEnv,
    store_url: str,
    pool: list[Uplink],
    what: str,
    *,
    hubs: int = 1,
    rss: list[float] | None = None,
) -> Measured:
    group = "bench" if hubs > 1 else None
    procs = [env.hub(store_url, group=group) for _ in range(hubs)]
    fleet = Fleet(env.broker.port, env.fleet, env.hub_keys.public(), client_id=env.name("fleet"))
    database = env.postgres.pid() if store_url.startswith("postgresql") else None

    def used() -> float:
        hub = sum(cpu_seconds(p.pid) for p in procs)
        return hub + (0.0 if database is None else cpu_seconds(database, tree=True))

    try:
        fleet.start()
        progress(f"{what}: pumping heartbeats for up to {RUN_SECONDS:.0f} s")
        before = used()
        done = fleet.pump(pool, window=WINDOW, seconds=RUN_SECONDS)
        cpu = used() - before
        if rss is not None:
            rss.extend(rss_mib(p.pid) for p in procs)
    finally:
        fleet.stop()
        for p in procs:
            env.stop(p)
    run = Measured(done, cpu)
    progress(
        f"{what}: {done.receipted:,} of {done.published:,} receipted in "
        f"{done.seconds:.1f} s = {done.rate:,.0f} msg/s wall, {run.per_core:,.0f} msg/s "
        f"per CPU-second of the hub{'' if database is None else ' and PostgreSQL'}"
    )
    return run


def bare_rss() -> float:
    """RSS of a bare interpreter that imported what the hub process imports."""
    code = (  # what a SQLite hub imports (the PostgreSQL backend only loads when used)
        "import vigil.hub.cli, vigil.hub.process, vigil.hub.store.sqlite, apprise, "
        "paho.mqtt.client, sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"
    )
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None  # noqa: S101
        wait_until(proc.stdout.readline, 60, what="the bare interpreter's imports")
        return rss_mib(proc.pid)
    finally:
        proc.communicate("")


def _backend(
    env: BenchEnv,
    results: Results,
    backend: str,
    *,
    floor: float,
    pools: tuple[list[Uplink], list[Uplink]],
    rss: list[float],
) -> float:
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    progress(f"{name}: enrolling {len(env.fleet):,} devices")
    url = env.new_store(backend)
    fresh = measure(env, url, pools[0], f"{name} fresh", rss=rss if backend == "sqlite" else None)
    server = "" if backend == "sqlite" else " and PostgreSQL"
    results.add(
        Figure(
            f"hub ingest, {len(env.fleet):,} devices, {name}, durable + receipt, per core",
            fresh.per_core,
            "msg/s",
            floor,
            "open+verify+seal only, no database (per core)",
            (Goal("ratio", ">=", 0.7),),
            note=f"receipts per CPU-second of the hub{server}; wall {fresh.pumped.rate:,.0f} "
            "msg/s with the broker and the load generator on the same 2 cores",
        )
    )
    progress(f"{name}: storing {HISTORY:,} more uplinks and receipts with bulk SQL")
    counts = prefill(url, HISTORY, progress=progress)
    after = measure(env, url, pools[1], f"{name} after {HISTORY:,}")
    results.add(
        Figure(
            f"  the same after {HISTORY:,} stored messages ({name})",
            after.per_core,
            "msg/s",
            fresh.per_core,
            "the same run's fresh-database figure",
            (Goal("ratio", ">=", 0.9),),
            note=f"store held {counts}; wall {after.pumped.rate:,.0f} msg/s",
        )
    )
    return fresh.pumped.rate


def main(env: BenchEnv, results: Results) -> dict[str, float]:
    """Run the ingest figures; return the measured rates (capacity for the latency bench)."""
    progress("crypto floor: open + verify + seal, no database")
    floor = crypto_floor(env)
    progress(f"crypto floor {floor:,.0f} msg/s; sealing two pools of {POOL:,} heartbeats")
    public = env.hub_keys.public()
    pools = (heartbeats(env.fleet, public, count=POOL), heartbeats(env.fleet, public, count=POOL))
    env.pools["flood"] = pools[0]  # valid on any fresh store with the fleet enrolled
    rss: list[float] = []
    rates = {
        b: _backend(env, results, b, floor=floor, pools=pools, rss=rss)
        for b in ("sqlite", "postgresql")
    }
    results.add(
        Figure(
            f"hub RSS at {len(env.fleet):,} devices (SQLite, after a run)",
            rss[0] if rss else float("nan"),
            "MiB",
            bare_rss(),
            "bare interpreter + the hub's libraries",
        )
    )
    progress("two hubs in one shared subscription group on one PostgreSQL")
    url = env.new_store("postgresql")
    two = measure(env, url, pools[0], "two hubs, PostgreSQL", hubs=2)
    results.add(
        Figure(
            "two hubs on one PostgreSQL (ingest, wall clock)",
            two.pumped.rate,
            "msg/s",
            rates["postgresql"],
            "one hub, the same run",
            (Goal("ratio", ">=", 1.5),),
            note="2 cores for 2 hubs, mosquitto, PostgreSQL and the fleet",
        )
    )
    return rates
