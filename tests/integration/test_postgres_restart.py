"""A hub's PostgreSQL store outlives a server restart: the transaction that meets the
dead connection fails (nothing is receipted on its word), the next one reconnects; a
notice sent just before the crash is recorded once the server is back, not sent again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.integration.test_hub_delivery import rig_for
from tests.support.parties import parties
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.sinks import smtp_sink, webhook_sink
from vigil.errors import StorageError
from vigil.hub.channels import AppriseNotifier, Notice
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


class _CrashAfterFirstSend:
    """A real channel (Apprise); the database crashes right after the first notice went out
    and comes back a moment later."""

    def __init__(self, server: PostgresServer) -> None:
        self.server, self.inner = server, AppriseNotifier()
        self.restarted: threading.Thread | None = None
        self.lock = threading.Lock()  # the notices go out in parallel

    def send(self, url: str, notice: Notice) -> tuple[bool, str]:
        result = self.inner.send(url, notice)
        with self.lock:
            if self.restarted is None:
                self.server.crash()
                self.restarted = threading.Thread(target=self._back_soon)
                self.restarted.start()
        return result

    def _back_soon(self) -> None:
        time.sleep(1.0)  # the outage lasts a moment (the scenario, not a wait for an event)
        self.server.start()


def test_a_notice_sent_just_before_the_database_crashed_is_recorded_not_sent_again(
    tmp_path: Path,
) -> None:
    with running_postgres(durable=True) as server, smtp_sink() as smtp, webhook_sink() as hook:
        rig = rig_for(server.url, tmp_path, smtp, hook)
        crashing = _CrashAfterFirstSend(server)
        rig.service.dispatcher.notifier = crashing
        try:
            rig.alarm(0)
            rig.service.escalate(rig.clock())
            assert rig.service.deliver() == 2  # the operators: one mail, one webhook
            assert crashing.restarted is not None
            crashing.restarted.join(60)
            with rig.service.store.read() as tx:
                statuses = [d.status for d in tx.deliveries.for_alert(1)]
            assert statuses == ["sent", "sent"]
            assert len(hook.posts) + len(smtp.messages) == 2  # nothing went twice
        finally:
            rig.service.dispatcher.close()
            rig.service.store.close()
