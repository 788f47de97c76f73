"""The running broker opens exactly one socket: the TLS listener we configured.

Checking the config text is not enough: in mosquitto 2.0 a listener option written
before the first `listener` line (`use_username_as_clientid`, `protocol`, ...) makes it
open its default plaintext listener on port 1883 as well, on every interface. What
mosquitto itself logs as opened is the proof.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.locked_broker import LockedBroker, locked_broker
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

OPENED = re.compile(r"Opening (ipv[46]|websockets) listen socket on port (\d+)")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LockedBroker]:
    with locked_broker(tmp_path) as locked:
        yield locked


def test_only_the_configured_tls_port_is_opened(broker: LockedBroker) -> None:
    wait_until(lambda: OPENED.search(broker.broker.log()), 10, what="mosquitto's listener log")
    ports = {int(port) for _, port in OPENED.findall(broker.broker.log())}
    assert ports == {broker.broker.port}, broker.broker.log()
