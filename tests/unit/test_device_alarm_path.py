"""The device's alarm path: one durable commit (the alarm with its state), then the publish."""

from __future__ import annotations

from pathlib import Path

from tests.support.device_setup import make_device
from vigil.device.config import load_config
from vigil.device.core import ButtonPressed
from vigil.device.daemon import Daemon
from vigil.device.outbox import Outbox

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def commits(statements: list[str]) -> int:
    """Durable commits among `statements`: each transaction, and each write outside one."""
    count, inside = 0, False
    for sql in statements:
        head = sql.lstrip().upper()
        if head.startswith("BEGIN"):
            inside = True
        elif head.startswith(("COMMIT", "END")):
            inside, count = False, count + 1
        elif head.startswith(WRITES) and not inside:
            count += 1
    return count


class Wire:
    """The Transport seam: notes how many outbox statements had run at each publish."""

    connected = True

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements
        self.statements_at_publish: list[int] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.statements_at_publish.append(len(self.statements))


def test_an_alarm_is_published_right_after_its_one_commit(tmp_path: Path) -> None:
    capacity = tmp_path / "capacity"
    capacity.write_text("42\n")
    overrides = {"alarm": {"hold_seconds": 1.0}, "battery": {"capacity_path": str(capacity)}}
    dev = make_device(tmp_path, overrides=overrides)
    cfg = load_config(dev.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")
    now = [100.0]
    daemon = Daemon(cfg, link_quality=lambda: None, keys=dev.device_keys, outbox=outbox,
                    feedback=type("Mute", (), {"play": lambda self, p: None})(),
                    clock=lambda: now[0], wall=lambda: 1_800_000_000.0,
                    ntp_flag=tmp_path / "synchronized")  # fmt: skip
    statements: list[str] = []
    wire = Wire(statements)
    daemon.attach(wire)
    daemon.post(ButtonPressed(now[0]))
    daemon.step()
    outbox._conn.set_trace_callback(  # every statement the outbox runs from here on
        statements.append
    )
    now[0] += 1.0
    daemon.step()  # the hold becomes an alarm: stored with its state, then published
    assert wire.statements_at_publish, "the alarm was not published"
    before = statements[: wire.statements_at_publish[0]]
    assert any(s.startswith("INSERT INTO outbox") for s in before)
    assert commits(before) == 1, before  # the alarm with its state; nothing more before it
    outbox.close()
