"""Two hub instances sharing the work: an MQTT v5 shared subscription and one PostgreSQL store.

Every uplink is stored once, every one gets its receipt, and each responder is
told once, whichever hub took the message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.hubrig import FakeClock, running_hub, wearable, write_config
from tests.support.hubstore import postgres_url
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek, write
from tests.support.postgres import PostgresServer
from tests.support.sinks import smtp_sink, webhook_sink
from tests.support.wait import wait_until
from vigil.wire import Alarm, Heartbeat, Message, Trigger

pytestmark = pytest.mark.integration


def hub_config(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "hub.key").write_bytes((tmp_path / "hub.key").read_bytes())
    (folder / "hub.key").chmod(0o600)
    path = folder / "hub.toml"
    path.write_text(text.replace('client_id = "hub-test"',
                                 f'client_id = "{name}"\nshared_group = "hubs"'))  # fmt: skip
    return path


def test_two_hubs_split_the_load_without_doing_anything_twice(
    tmp_path: Path, mosquitto: Broker, postgres: PostgresServer
) -> None:
    with smtp_sink() as smtp, webhook_sink() as hook, postgres_url(postgres) as url:
        base = write_config(tmp_path, broker=mosquitto, smtp=smtp, hook=hook).read_text()
        first, second = hub_config(tmp_path, "hub-a", base), hub_config(tmp_path, "hub-b", base)
        clock = FakeClock()
        with running_hub(first, clock, store_url=url) as a, \
                running_hub(second, clock, store_url=url) as b:  # fmt: skip
            p = parties()
            write(
                a.store,
                lambda tx: tx.devices.enroll(
                    p.device_id, label="Ana", public_keys=p.device.public()
                ),
            )
            with wearable(mosquitto) as device:
                for seq in range(1, 21):
                    device.send(Message(seq=seq, body=Heartbeat(battery=80), epoch=EPOCH))
                device.send(Message(seq=21, body=Alarm(Trigger.BUTTON, battery=70), epoch=EPOCH))
                receipts = device.wait_for("stored", 21, timeout=20)
                assert sorted(m.body.seq for m in receipts) == list(range(1, 22))  # type: ignore[union-attr]
                wait_until(lambda: [x for x in hook.posts if x.path == "/operators"], 20)
                wait_until(lambda: smtp.messages, 20)
            assert peek(a.store, lambda tx: tx.uplinks.count()) == 21
            assert len(peek(a.store, lambda tx: tx.alerts.all())) == 1
            # Let both delivery threads look again: nobody is told twice.
            clock.advance(30)
            wait_until(
                lambda: all(
                    d.status == "sent"
                    for d in peek(b.store, lambda tx: tx.deliveries.for_alert(1))
                ),
                10,
            )
            assert len([x for x in hook.posts if x.path == "/operators"]) == 1
            assert len(smtp.messages) == 1
            assert a.accepted > 0  # the broker split the load...
            assert b.accepted > 0
            assert a.accepted + b.accepted == 21  # ...and nothing was stored twice
