"""Fixtures shared by integration modules: an empty hub store on each backend with a device
enrolled in it (the store tests), and hub services without a broker (the ingest and batch
tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubrig import FakeClock
from tests.support.hubstore import store_url
from tests.support.offline_hub import (
    RecordingTransport,
    enroll_both,
    offline_config,
    offline_service,
)
from tests.support.parties import parties
from tests.support.sinks import WebhookSink, smtp_sink, webhook_sink
from vigil.hub.daemon import HubService
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


@pytest.fixture(params=["sqlite", "postgresql"])
def ingest_hub(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[HubService, FakeClock, WebhookSink]]:
    """A hub service on each backend, no broker, its notices sent to real SMTP and HTTP
    sinks: the service, its clock and the webhook sink."""
    with smtp_sink() as smtp, webhook_sink() as hook, store_url(request, tmp_path) as url:
        config = offline_config(tmp_path, url, smtp=smtp, hook=hook)
        store = open_store(config.store_url, create=True)
        clock = FakeClock()
        # Enrolled now: a device never heard from is watched from its enrolment (v2).
        enroll_both(store, clock.now)
        # rand=1.0: retries at the top of their jitter range, so the tests' times are exact
        yield offline_service(config, store, clock, rand=lambda: 1.0), clock, hook
        store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubService]:
    """A hub service on each backend, both test devices enrolled, that keeps what it
    publishes (`RecordingTransport`)."""
    with store_url(request, tmp_path) as url:
        clock = FakeClock()
        store = open_store(url, create=True)
        enroll_both(store, clock.now)
        service = offline_service(offline_config(tmp_path, url), store, clock)
        service.transport = RecordingTransport()
        yield service
        store.close()
