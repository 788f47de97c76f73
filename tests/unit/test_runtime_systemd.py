"""sd_status: the unit's status line, received on a real notify socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.runtime.mqtt import ConnectionState, LinkStatus
from vigil.runtime.systemd import sd_status


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_status_line_reaches_systemd(notify_socket: socket.socket) -> None:
    state = ConnectionState(
        "broker.example.org:8883", LinkStatus.CONNECTING, since=0.0, failures=3,
        last_error="connection refused", next_retry=60.0,
    )  # fmt: skip
    assert sd_status(f"broker: {state.describe()}")
    received = notify_socket.recv(4096).decode()
    assert received.startswith("STATUS=broker: connecting to broker.example.org:8883 since ")
    assert "3 failed, last: connection refused; next retry " in received


def test_a_hostile_status_cannot_add_assignments(notify_socket: socket.socket) -> None:
    assert sd_status("host\nREADY=1\nWATCHDOG=1")
    received = notify_socket.recv(4096).decode()
    assert received == "STATUS=host READY=1 WATCHDOG=1"
    assert "\n" not in received


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_status("anything")
