"""A hub's PostgreSQL store outlives a server restart: the transaction that meets the
dead connection fails (nothing is receipted on its word), the next one reconnects."""

from __future__ import annotations

import pytest

from tests.support.parties import parties
from tests.support.postgres import running_postgres
from vigil.errors import StorageError
from vigil.hub.store import open_store

pytestmark = pytest.mark.integration


def test_the_store_reconnects_after_the_server_restarts() -> None:
    p = parties()
    # Its own server (restarting it disturbs no other test), durable: a crash keeps commits.
    with running_postgres(durable=True) as server:
        store = open_store(server.url, create=True)
        try:
            with store.transaction() as tx:
                tx.devices.enroll(p.device_id, label="before", public_keys=p.device.public())
            server.restart()
            with pytest.raises(StorageError), store.read() as tx:  # the old link is dead
                tx.devices.get(p.device_id)
            with store.transaction() as tx:  # a new one
                tx.devices.enroll(p.other_id, label="after", public_keys=p.other.public())
            with store.read() as tx:
                labels = [tx.devices.get(d) for d in (p.device_id, p.other_id)]
            assert [d.label for d in labels if d is not None] == ["before", "after"]
        finally:
            store.close()
