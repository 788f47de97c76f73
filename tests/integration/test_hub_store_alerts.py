"""The hub store's alerts: opened once, their positions, escalation steps and deliveries never
twice; SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.parties import EPOCH, OTHER_EPOCH
from vigil.errors import NoSuchAlert
from vigil.hub.store import Alert, AlertKind, AlertState, LastFix, Store
from vigil.wire import DeviceId

pytestmark = pytest.mark.integration


def _fields(alert: Alert) -> dict[str, object]:
    return {f: getattr(alert, f) for f in alert.__dataclass_fields__}


def test_alerts_positions_and_idempotent_open(store: Store, enrolled: DeviceId) -> None:
    fix = LastFix(17.06, -96.72, taken_at=90.0, received_at=100.0)
    draft = Alert(0, enrolled, AlertKind.ALARM, AlertState.OPEN, 100.0, 100.0, alarm_seq=7,
                  alarm_epoch=EPOCH.hex, trigger="button", battery=55, last_fix=fix)  # fmt: skip
    with store.transaction() as tx:
        alert = tx.alerts.open(draft)
        assert tx.alerts.open(draft).id == alert.id
        tx.alerts.save(
            Alert(**{**_fields(alert), "state": AlertState.ACKNOWLEDGED, "acknowledged_by": "op"})
        )
        tx.alerts.add_position(alert.id, enrolled, EPOCH.hex, 8, fix)
        tx.alerts.add_position(alert.id, enrolled, EPOCH.hex, 8, fix)
        # The same alarm seq in a new life of the device is another alarm.
        reborn = tx.alerts.open(replace(draft, alarm_epoch=OTHER_EPOCH.hex))
        tx.alerts.add_position(reborn.id, enrolled, OTHER_EPOCH.hex, 8, fix)
    assert alert.last_fix == fix
    with store.read() as tx:
        again = tx.alerts.get(alert.id)
        assert tx.alerts.find(enrolled, EPOCH.hex, 7) == again
        assert tx.alerts.find(enrolled, EPOCH.hex, 8) is None
        assert tx.alerts.find(enrolled, OTHER_EPOCH.hex, 7) == tx.alerts.get(reborn.id)
        assert tx.alerts.positions(alert.id) == [fix]
        assert tx.alerts.positions(reborn.id) == [fix]
        assert [a.id for a in tx.alerts.all(active_only=True)] == [alert.id, reborn.id]
        with pytest.raises(NoSuchAlert):
            tx.alerts.get(reborn.id + 1)
    assert again.state is AlertState.ACKNOWLEDGED
    assert again.acknowledged_by == "op"


def test_steps_and_deliveries_never_twice(store: Store, enrolled: DeviceId) -> None:
    recipients = [("ops", "Op 1", "mailto://a@b"), ("ops", "Op 1 again", "mailto://a@b")]
    with store.transaction() as tx:
        alert = tx.alerts.open(Alert(0, enrolled, AlertKind.SILENT, AlertState.OPEN, 1.0, 1.0))
        assert tx.deliveries.fire_step(alert.id, "tier-1", recipients, now=2.0) is True
        assert tx.deliveries.fire_step(alert.id, "tier-1", recipients, now=3.0) is False
        assert tx.deliveries.fired_steps(alert.id) == {"tier-1"}
        (delivery,) = tx.deliveries.due(2.0)
        assert tx.deliveries.claim(delivery.id, now=2.0, lease=60) is True
        assert tx.deliveries.claim(delivery.id, now=2.0, lease=60) is False  # a second hub
        tx.deliveries.record_attempt(delivery.id, at=2.0, ok=False, detail="refused", next_at=4.0)
        assert tx.deliveries.due(3.0) == []
        tx.deliveries.record_attempt(delivery.id, at=4.0, ok=True, detail="sent", next_at=None)
    with store.read() as tx:
        (done,) = tx.deliveries.for_alert(alert.id)
        assert (done.status, done.attempts, done.last_error) == ("sent", 2, None)
        assert [a[2] for a in tx.deliveries.attempts(delivery.id)] == [False, True]
