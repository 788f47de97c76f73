"""Hub ingest with 10,000 enrolled wearables, on SQLite and PostgreSQL (fsync on).

The goal's figure is the hub's ingest pipeline against the goal's baseline, both in this
process and neither with a broker: `HubService.handle_batch` (open, verify, store with
one durable commit a batch, handlers, sealed `stored` receipts handed to a transport that
takes them) MAX_BATCH at a time, as the ingest worker takes them under load, against the
crypto alone (open + verify the same envelopes, mint a nonce, seal a receipt; no
database), in turns, wall clock. The PostgreSQL server runs beside it, as it would.

Beside it, reported: real `vigil-hub run` processes with a real broker, a simulated
fleet publishing real v2 heartbeats (at most WINDOW unanswered) and counting `stored`
receipts; receipts per CPU-second of the hub (and, on PostgreSQL, of the database
server's processes), and the wall rate with the broker and the fleet on the same two
cores. That adds the MQTT client's cost, which the baseline does not have.

Figures: each backend fresh, then after 1 M stored uplinks and 1 M sent receipts (bulk
SQL, `bench.prefill`) against the fresh figure; the hub's RSS with the fleet enrolled;
two hubs in one shared subscription group on one PostgreSQL against one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bench.env import BenchEnv, progress
from bench.hub_fleet import NullTransport, Paired, full, hub_config, interleaved, ticking
from bench.prefill import prefill
from bench.results import Figure, Goal, Results
from tests.support.fleet import Fleet, Pumped, Uplink, heartbeats
from tests.support.hubproc import cpu_seconds, rss_mib
from tests.support.wait import wait_until
from vigil.hub.channels import AppriseNotifier
from vigil.hub.daemon import HubService
from vigil.hub.store import DeviceRecord, open_store

RUN_SECONDS = 8.0  # per measured run; bounded by the pool too
POOL = 16_000  # heartbeats sealed per pool (two pools: fresh, then after the history)
WINDOW = 1000  # unanswered uplinks at most
HISTORY = 1_000_000
PIPELINE_ROUND = 320  # messages a round (5 batches); rounds alternate floor and pipeline
PIPELINE_ROUNDS = 12


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


def pipeline(env: BenchEnv, url: str, pool: Sequence[Uplink], what: str) -> Paired:
    """The hub's ingest pipeline in this process on the store at `url`, against the crypto
    floor over the same envelopes (`bench.hub_fleet.interleaved`)."""
    messages = [(up.device.up, up.envelope) for up in pool][: PIPELINE_ROUNDS * PIPELINE_ROUND]
    records = {d.device_id: DeviceRecord(d.device_id, "bench", d.keys.public()) for d in env.fleet}
    with in_process_hub(env, url) as service:
        service.registry.refresh()  # a running hub has met its fleet: its registry is warm
        for device in env.fleet:
            service.registry.active(device.device_id)
        with ticking(service):
            run = interleaved(service, env.hub_keys, records, messages,
                              len(messages) // PIPELINE_ROUND)  # fmt: skip
    progress(f"{what}: pipeline {run.full:,.0f} msg/s, crypto floor {run.floor:,.0f} msg/s, "
             f"{run.ratio:.2f}x (in process, {len(messages):,} messages)")  # fmt: skip
    return run


def running_store(env: BenchEnv, backend: str, first_words: Sequence[Uplink]) -> str:
    """A new store with the fleet enrolled and every device's first word in it, as a hub
    that has run for a while has: a device's first uplink of a life costs more (its life
    and replay window are made), once."""
    url = env.new_store(backend)
    with in_process_hub(env, url) as service:
        full(service, [(up.device.up, up.envelope) for up in first_words])
        assert service.accepted == len(first_words), service.rejected  # noqa: S101
    return url


@contextmanager
def in_process_hub(env: BenchEnv, url: str) -> Iterator[HubService]:
    """The hub's service in this process on the store at `url`; its receipts are sealed
    and handed to a transport that takes them (no broker)."""
    store = open_store(url)
    try:
        service = HubService(hub_config(url, env.work), store=store, hub_keys=env.hub_keys,
                             notifier=AppriseNotifier())  # fmt: skip
        service.transport = NullTransport()
        yield service
    finally:
        store.close()


def _backend(
    env: BenchEnv, results: Results, backend: str, *, pools: tuple[list[Uplink], list[Uplink]],
    first_words: Sequence[Uplink], rss: list[float],
) -> float:  # fmt: skip
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    server = "" if backend == "sqlite" else " and PostgreSQL"
    progress(f"{name}: enrolling {len(env.fleet):,} devices and storing a first word of each")
    url = running_store(env, backend, first_words)
    runs: list[tuple[Measured, Paired]] = []
    for label, pool in (("fresh", pools[0]), (f"after {HISTORY:,}", pools[1])):
        if runs:
            progress(f"{name}: storing {HISTORY:,} more uplinks and receipts with bulk SQL")
            counts = prefill(url, HISTORY, progress=progress)
        proc = measure(env, url, pool, f"{name} {label}",
                       rss=rss if backend == "sqlite" and not runs else None)  # fmt: skip
        rest = pool[proc.pumped.published :]  # never published: new to the store
        runs.append((proc, pipeline(env, url, rest, f"{name} {label}")))
    (fresh_proc, fresh), (after_proc, after) = runs
    devices = f"{len(env.fleet):,} devices"
    results.add(Figure(
        f"hub ingest, {devices}, {name}, durable + receipt", fresh.full, "msg/s",
        fresh.floor, "open+verify+seal only, no database", (Goal("ratio", ">=", 0.7),),
        note="the hub's pipeline in process, MAX_BATCH a batch, wall clock; no broker "
             "(nor in the baseline)",
    ))  # fmt: skip
    results.add(Figure(
        f"  the same after {HISTORY:,} stored messages ({name})", after.ratio, "x floor",
        fresh.ratio, "the same run's fresh-database figure", (Goal("ratio", ">=", 0.9),),
        note=f"store held {counts}; {after.full:,.0f} msg/s against a floor of "
             f"{after.floor:,.0f}",
    ))  # fmt: skip
    for label, proc in (("fresh", fresh_proc), (f"after {HISTORY:,}", after_proc)):
        results.add(Figure(
            f"  hub process with a broker, {name} {label}, per core", proc.per_core, "msg/s",
            fresh.full, "the pipeline in process",
            note=f"receipts per CPU-second of the hub{server}, its MQTT client included; "
                 f"wall {proc.pumped.rate:,.0f} msg/s with the broker and the load "
                 "generator on the same 2 cores",
        ))  # fmt: skip
    return fresh_proc.pumped.rate


def main(env: BenchEnv, results: Results) -> dict[str, float]:
    """Run the ingest figures; return the measured rates (capacity for the latency bench)."""
    progress(f"sealing a first word of each device and two pools of {POOL:,} heartbeats")
    public = env.hub_keys.public()
    first_words = heartbeats(env.fleet, public, count=len(env.fleet))
    pools = (heartbeats(env.fleet, public, count=POOL), heartbeats(env.fleet, public, count=POOL))
    env.pools["flood"] = pools[0]  # valid on any fresh store with the fleet enrolled
    rss: list[float] = []
    rates = {b: _backend(env, results, b, pools=pools, first_words=first_words, rss=rss)
             for b in ("sqlite", "postgresql")}  # fmt: skip
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
    url = running_store(env, "postgresql", first_words)
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
