"""The hub store's append-only records: the hash-chained audit log and the rejection counts;
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from vigil.hub.store import Store

pytestmark = pytest.mark.integration


def test_audit_chain_and_rejections(store: Store) -> None:
    with store.transaction() as tx:
        first = tx.audit.append(at=1.0, actor="op", action="ack", subject="alert 1")
        second = tx.audit.append(at=2.0, actor="op", action="resolve", subject="alert 1")
        tx.rejections.count("BadSignature", at=1.0)
        tx.rejections.count("BadSignature", at=2.0)
    assert second.prev_hash == first.hash
    with store.read() as tx:
        assert tx.audit.entries() == [first, second]
        assert tx.audit.entries(after=1) == [second]
        assert tx.audit.head() == (2, second.hash)
        assert tx.rejections.totals() == {"BadSignature": 2}
