"""The hub store's schema: created only on request; a version-1 store migrated with its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support.hubstore import postgres_url
from tests.support.parties import EPOCH, parties
from tests.support.postgres import PostgresServer
from vigil.errors import ReplayedMessage, StoreMissing
from vigil.hub.store import Acceptance, LastFix, open_store, schema
from vigil.wire import Checkin, Message
from vigil.wire.liveness import Epoch

pytestmark = pytest.mark.integration


def test_a_missing_store_is_created_only_on_request(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with pytest.raises(StoreMissing, match="vigil-hub init"):
        open_store(url)
    assert not (tmp_path / "hub.db").exists()
    open_store(url, create=True).close()
    open_store(url, create=True).close()  # idempotent
    store = open_store(url)
    try:
        assert store.schema_version() == schema.LATEST
    finally:
        store.close()


def test_an_empty_postgresql_schema_is_not_a_store(postgres: PostgresServer) -> None:
    with postgres_url(postgres) as url:
        with pytest.raises(StoreMissing, match="vigil-hub init"):
            open_store(url)
        open_store(url, create=True).close()
        open_store(url).close()


def test_migrates_a_version_1_store_keeping_its_data(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    with conn:
        for stmt in schema.statements(1, schema.SQLITE):
            conn.execute(stmt)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        keys = parties().device.public().to_text()
        device = parties().device_id.hex
        conn.execute(
            "INSERT INTO devices (device_id, label, signing_key, kem_key, enrolled_at, "
            "window_highest, window_mask) VALUES (?, 'Old', ?, ?, 0, 5000, ?)",
            (device, keys["signing"], keys["kem"], bytes(511) + b"\x01"),
        )
        conn.execute("INSERT INTO uplinks VALUES (?, 3, 'alarm', x'7b7d', 5.0, 1)", (device,))
        conn.execute(
            "INSERT INTO alerts (device_id, kind, state, opened_at, updated_at, alarm_seq, "
            "trigger) VALUES (?, 'alarm', 'open', 5.0, 5.0, 3, 'button')",
            (device,),
        )
        conn.execute("INSERT INTO positions VALUES (?, 4, 1, 1.0, 2.0, 6.0, 6.0)", (device,))
    conn.close()
    store = open_store(f"sqlite:///{db}")  # an existing store is migrated without --create
    try:
        assert store.schema_version() == schema.LATEST == 8
        legacy, device_id = schema.LEGACY_EPOCH, parties().device_id
        with store.transaction() as tx:  # version-1 rows live on under the legacy epoch
            old = tx.uplinks.get(device_id, legacy, 3)
            alert = tx.alerts.find(device_id, legacy, 3)
            assert alert is not None
            assert tx.alerts.positions(alert.id) == [LastFix(1.0, 2.0, 6.0, 6.0)]
            with pytest.raises(ReplayedMessage):  # its replay window came along
                tx.uplinks.accept(device_id, Message(5, Checkin(), epoch=Epoch.parse(legacy)),
                                  received_at=7.0)  # fmt: skip
        with store.transaction() as tx:
            fresh = tx.uplinks.accept(
                device_id, Message(3, Checkin(), epoch=EPOCH), received_at=8.0
            )
            record = tx.devices.get(parties().device_id)
            seq = tx.downlinks.queue(parties().device_id, "stored", 1, now=1.0)
            (pending,) = tx.downlinks.pending(now=1.0)
            assert tx.downlinks.claim(pending.id, now=1.0, lease=10) is True
            assert tx.downlinks.pending(now=2.0) == []
            tx.downlinks.release(pending.id)
            assert [d.seq for d in tx.downlinks.pending(now=2.0)] == [seq]
        assert record is not None
        assert (record.label, record.epoch) == ("Old", EPOCH.hex)
        assert old is not None
        assert (old.kind, old.processed, old.digest) == ("alarm", True, None)
        assert fresh.status is Acceptance.NEW
    finally:
        store.close()
