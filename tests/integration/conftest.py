"""Fixtures shared by integration modules: an empty hub store on each backend, and a device
enrolled in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubstore import store_url
from tests.support.parties import parties
from vigil.hub.store import Store, open_store
from vigil.wire import DeviceId


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_url(request, tmp_path) as url:
        s = open_store(url, create=True)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def enrolled(store: Store) -> DeviceId:
    p = parties()
    with store.transaction() as tx:
        tx.devices.enroll(p.device_id, label="Ana", public_keys=p.device.public(),
                          contacts=["mailto://x@y"], now=5.0)  # fmt: skip
    return p.device_id
