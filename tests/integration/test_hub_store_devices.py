"""The hub store's devices: enrolment, re-enrolment and revocation, the newest state and fix;
run against SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.support.parties import parties
from vigil.errors import AlreadyEnrolled, UnknownDevice
from vigil.hub.store import LastFix, Store, schema
from vigil.wire import DeviceId, DeviceKeys

pytestmark = pytest.mark.integration


def test_enroll_and_get(store: Store, enrolled: DeviceId) -> None:
    with store.read() as tx:
        record = tx.devices.get(enrolled)
        assert tx.devices.get(DeviceId.generate()) is None
    assert record is not None
    assert record.label == "Ana"
    assert record.contacts == ("mailto://x@y",)
    assert record.enrolled_at == 5.0
    assert not record.revoked
    assert record.public_keys.to_text() == parties().device.public().to_text()
    assert store.schema_version() == schema.LATEST


def test_reenrol_same_keys_updates_other_keys_refused(store: Store, enrolled: DeviceId) -> None:
    keys = parties().device.public()
    with store.transaction() as tx:
        tx.devices.enroll(enrolled, label="Ana M.", public_keys=keys)
        record = tx.devices.get(enrolled)
    assert record is not None
    assert record.label == "Ana M."
    with pytest.raises(AlreadyEnrolled), store.transaction() as tx:
        tx.devices.enroll(enrolled, label="Eve", public_keys=DeviceKeys.generate().public())


def test_revoke_then_reenrol_with_new_keys(store: Store, enrolled: DeviceId) -> None:
    new = DeviceKeys.generate().public()
    with store.transaction() as tx:
        tx.devices.revoke(enrolled, now=9.0)
        revoked = tx.devices.get(enrolled)
        tx.devices.enroll(enrolled, label="Ana", public_keys=new)
        again = tx.devices.get(enrolled)
    assert revoked is not None
    assert revoked.revoked_at == 9.0
    assert again is not None
    assert not again.revoked
    assert again.public_keys.to_text() == new.to_text()
    with pytest.raises(UnknownDevice), store.transaction() as tx:
        tx.devices.revoke(DeviceId.generate(), now=1.0)


def test_device_state_keeps_the_newest_fix(store: Store, enrolled: DeviceId) -> None:
    newer = LastFix(17.0, -96.0, taken_at=50.0, received_at=60.0)
    older = LastFix(18.0, -97.0, taken_at=40.0, received_at=70.0)
    with store.transaction() as tx:
        tx.devices.note_state(enrolled, battery=40, fix=newer, gps_fix_at=55.0)
        tx.devices.note_state(enrolled, fix=older)  # arrived later, taken earlier
        tx.devices.note_offline(enrolled, at=80.0)
        record = tx.devices.get(enrolled)
    assert record is not None
    assert (record.battery, record.last_fix, record.gps_fix_at) == (40, newer, 55.0)
    assert record.offline_at == 80.0
