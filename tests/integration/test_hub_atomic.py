"""Every operator action, enrolment and revocation is one transaction: all of it or nothing.

A trigger in the real database refuses one of the action's writes (the audit
entry, or the downlink to the wearer); afterwards nothing of the action may be
visible, and the error must say what failed. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.hubstore import store_url
from tests.support.parties import EPOCH, parties
from vigil.errors import StorageError
from vigil.hub import cli, operator
from vigil.hub.config import Channel, Recipient
from vigil.hub.store import Alert, AlertKind, AlertState, Store, open_store
from vigil.wire import Alarm, DeviceId, Message, Trigger
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import encode_payload

pytestmark = pytest.mark.integration
PUBLIC = {"public": Channel("public", (Recipient("Press", "json://127.0.0.1:9/p"),), public=True)}


@dataclass
class Db:
    url: str
    store: Store

    @contextmanager
    def refusing(self, table: str) -> Iterator[None]:
        """While the block runs, every INSERT into `table` fails with 'refused by test'."""
        run = _sqlite_sql if self.url.startswith("sqlite") else _postgres_sql
        run(self.url, _REFUSE[self.url.startswith("sqlite")].format(table=table))
        try:
            yield
        finally:
            run(self.url, f"DROP TRIGGER refuse_insert ON {table}" if not
                self.url.startswith("sqlite") else "DROP TRIGGER refuse_insert")  # fmt: skip


_REFUSE = {
    True: "CREATE TRIGGER refuse_insert BEFORE INSERT ON {table} "
    "BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    False: "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'refused by test'; END $$ LANGUAGE plpgsql; "
    "CREATE TRIGGER refuse_insert BEFORE INSERT ON {table} "
    "FOR EACH ROW EXECUTE FUNCTION refuse()",
}


def _sqlite_sql(url: str, sql: str) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        conn.executescript(sql)
    finally:
        conn.close()


def _postgres_sql(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    with store_url(request, tmp_path) as url:
        store = open_store(url, create=True)
        p = parties()
        with store.transaction() as tx:
            tx.devices.enroll(p.device_id, label="Ana", public_keys=p.device.public(), now=1.0)
        try:
            yield Db(url, store)
        finally:
            store.close()


ALARM = Message(7, Alarm(Trigger.BUTTON), epoch=EPOCH)


def _alarm(store: Store, *, state: AlertState = AlertState.OPEN, verified: bool = False) -> Alert:
    """An alarm alert whose uplink is stored: what the wearer is told names its digest."""
    draft = Alert(0, parties().device_id, AlertKind.ALARM, state, 10.0, 10.0, alarm_seq=7,
                  alarm_epoch=EPOCH.hex, trigger="button",
                  verified_at=20.0 if verified else None)  # fmt: skip
    with store.transaction() as tx:
        tx.uplinks.accept(parties().device_id, ALARM, received_at=10.0)
        alert = tx.alerts.open(draft)
        tx.alerts.save(draft.__class__(**{**_fields(draft), "id": alert.id}))
        return tx.alerts.get(alert.id)


def _fields(alert: Alert) -> dict[str, object]:
    return {f: getattr(alert, f) for f in alert.__dataclass_fields__}


def _snapshot(store: Store, alert_id: int) -> tuple[object, ...]:
    with store.read() as tx:
        return (tx.alerts.get(alert_id), tx.downlinks.pending(), tx.audit.entries(),
                tx.deliveries.for_alert(alert_id))  # fmt: skip


@dataclass(frozen=True)
class Case:
    action: str
    before: AlertState
    verified: bool
    told: str | None  # what the wearer is told (downlink kind), if anything


CASES = [
    Case("ack", AlertState.OPEN, False, "acknowledged"),
    Case("resolve", AlertState.ACKNOWLEDGED, False, "resolved"),
    Case("false-alarm", AlertState.OPEN, False, "resolved"),
    Case("verify", AlertState.ACKNOWLEDGED, False, None),
    Case("broadcast", AlertState.ACKNOWLEDGED, True, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.action for c in CASES])
@pytest.mark.parametrize("refused", ["audit", "downlinks"])
def test_an_operator_action_is_all_or_nothing(db: Db, case: Case, refused: str) -> None:
    action, told = case.action, case.told
    alert = _alarm(db.store, state=case.before, verified=case.verified)
    untouched = _snapshot(db.store, alert.id)
    writes_there = refused == "audit" or told is not None
    with db.refusing(refused):
        if writes_there:
            with pytest.raises(StorageError, match="refused by test"):
                operator.act(db.store, alert.id, action, by="rosa", now=30.0, channels=PUBLIC)
            assert _snapshot(db.store, alert.id) == untouched
    # The normal path: every part of the action is there.
    updated = operator.act(db.store, alert.id, action, by="rosa", now=31.0, channels=PUBLIC)
    with db.store.read() as tx:
        assert tx.alerts.get(alert.id) == updated
        (entry,) = tx.audit.entries()
        told_wearer = [(d.kind, d.arg, d.epoch, d.digest) for d in tx.downlinks.pending()]
        planned = tx.deliveries.for_alert(alert.id)
    assert entry.actor == "rosa"
    assert entry.subject == f"alert {alert.id}"
    digest = uplink_digest(encode_payload(ALARM))
    assert told_wearer == ([] if told is None else [(told, 7, EPOCH.hex, digest)])
    assert len(planned) == (1 if action == "broadcast" else 0)


def _hub_config(tmp_path: Path, url: str) -> Path:
    parties().hub.save(tmp_path / "hub.key")
    path = tmp_path / "hub.toml"
    path.write_text(f'[hub]\nkeys = "hub.key"\n[store]\nurl = "{url}"\n'
                    '[mqtt]\nhost = "127.0.0.1"\n')  # fmt: skip
    return path


def _registry(store: Store, device_id: DeviceId) -> tuple[object, ...]:
    with store.read() as tx:
        return tx.devices.get(device_id), tx.audit.entries()


def test_enrol_and_revoke_are_all_or_nothing(
    db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _hub_config(tmp_path, db.url)
    new, keys = DeviceId.generate(), parties().other.public().to_text()
    enroll = ["enroll", "--device-id", new.hex, "--label", "Bea", "--signing", keys["signing"],
              "--kem", keys["kem"], "--config", str(config)]  # fmt: skip
    revoke = ["revoke", parties().device_id.hex, "--config", str(config)]
    before = (_registry(db.store, new), _registry(db.store, parties().device_id))
    with db.refusing("audit"):
        assert cli.main(enroll, out=io.StringIO()) == 1
        assert cli.main(revoke, out=io.StringIO()) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert all("refused by test" in line for line in err)
    assert (_registry(db.store, new), _registry(db.store, parties().device_id)) == before
    assert cli.main(enroll, out=io.StringIO()) == 0
    assert cli.main(revoke, out=io.StringIO()) == 0
    with db.store.read() as tx:
        assert [e.action for e in tx.audit.entries() if e.action != "checkpoint"] == [
            "enroll",
            "revoke",
        ]
        assert tx.devices.active(new).label == "Bea"
        revoked = tx.devices.get(parties().device_id)
    assert revoked is not None
    assert revoked.revoked
