"""The captor with the wearable in hand, as the device meets them (issue 12, device side).

A real hub and the real device daemon behind the attacker's broker, on a driven
clock (tests/adversary/rig.py). The same script of presses runs twice, once
with a real cancel and once with a duress cancel, then a hold, a cancel of it,
and a tamper: everything a captor could observe — every envelope's size and
time on the wire both ways, every vibration and when, the files in the state
folder and their sizes, every device log line — must be the same. Then what a
seized card and journal hold, and the crypto-erase after a tamper.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.adversary.rig import HEARTBEAT, HUB_TICK, T0, Rig, rig
from vigil.device import rekey
from vigil.device.atrest import StateKey
from vigil.device.core import GpsFix, Pattern, TamperClosed
from vigil.device.outbox import STATE_KEY_FILE
from vigil.errors import StateUnreadable
from vigil.hub.store import AlertKind
from vigil.wire.fix import Fix
from vigil.wire.messages import Alarm, Cancel, Heartbeat, Kind, Mode, Trigger

AFTER = 10 * HEARTBEAT  # how long the captor watches after each step
# Gestures that take as long to press: the default cancel "..." is a dash shorter than the
# duress cancel "..-", and the wire would show those 0.6 s between alarm and cancel. A human
# varies by more than that; the device must add nothing, which is what is compared here.
SAME_LENGTH = {"cancel": "-..", "duress_cancel": "..-"}
OAXACA = Fix(lat=17.065432, lon=-96.723456, fix_time=T0)
# Words a seized card or journal must not show: the modes, the kinds, the triggers.
SECRET_WORDS = (b"silent", b"duress", b"covert", b"active", b"cancel", b"alarm", b"position",
                b"heartbeat", b"button", b"tamper", b"mode", b"kind")  # fmt: skip
SECRET_PLACES = (b"17.06", b"96.72")  # the wearer's position, as any decimal text would show it


@dataclass
class Observed:
    """Everything a captor could record, by phase of the script."""

    up: list[tuple[float, int]] = field(default_factory=list)  # (time, envelope size)
    down: list[tuple[float, int]] = field(default_factory=list)
    felt: list[tuple[float, Pattern]] = field(default_factory=list)
    files: list[dict[str, int]] = field(default_factory=list)  # state folder, per phase
    log: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"uplinks": len(self.up), "downlinks": len(self.down), "vibrations": len(self.felt),
                "log lines": len(self.log)}  # fmt: skip


def _snapshot(r: Rig) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(r.state_dir.iterdir()) if p.is_file()}


def _device_lines(
    caplog: pytest.LogCaptureFixture, r: Rig, *, level: int = logging.DEBUG
) -> list[str]:
    """The device's log lines (not the hub's: another machine), ids and epochs masked."""
    lines = [f"{rec.levelname} {rec.name}: {rec.getMessage()}" for rec in caplog.records
             if rec.name.startswith("vigil.device") and rec.levelno >= level]  # fmt: skip
    masked = [line.replace(r.provisioned.device_id.hex, "<device>") for line in lines]
    return [re.sub(r"\b[0-9a-f]{16}\b", "<epoch>", line) for line in masked]


def _script(r: Rig, gesture: str, monkeypatch: pytest.MonkeyPatch) -> Observed:
    """Alarm; `gesture`; watch. Hold; cancel it; watch. Tamper; watch (zeroise)."""
    seen = Observed()
    monkeypatch.setattr(r.wearer, "play", lambda p: seen.felt.append((r.clock.now, p)))
    r.device.post(TamperClosed(r.clock.now))  # worn: the tamper loop arms
    r.device.post(GpsFix(at=r.clock.now, fix=OAXACA))
    r.advance(5)
    r.hold()
    r.advance(2)
    r.gesture(gesture)
    r.advance(AFTER)
    seen.files.append(_snapshot(r))
    r.device.post(GpsFix(at=r.clock.now, fix=OAXACA))
    r.hold()  # "show me it is off"
    r.advance(HUB_TICK + 1)
    r.cancel()
    r.advance(AFTER)
    seen.files.append(_snapshot(r))
    r.tamper()  # taken off
    r.advance(AFTER)
    seen.files.append(_snapshot(r))
    seen.up = [(p.at, len(p.payload)) for p in r.broker.sent("up")]
    seen.down = [(p.at, len(p.payload)) for p in r.broker.sent("down")]
    return seen


def _run(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, *, duress: bool, alarm: dict[str, object] | None = None,
) -> tuple[Observed, list[Alarm | Cancel], int]:  # fmt: skip
    folder = tmp_path / name
    folder.mkdir()
    caplog.clear()
    with rig(folder, alarm=alarm) as r:
        cfg = r.device.cfg.alarm
        seen = _script(r, cfg.duress_cancel if duress else cfg.cancel, monkeypatch)
        seen.log = _device_lines(caplog, r)
        said = [m.body for m in r.uplinks() if isinstance(m.body, Alarm | Cancel)]
        assert not r.uplinks(Kind.POSITION), "positions ride in heartbeats"
        still_open = sum(1 for a in r.alerts(AlertKind.ALARM) if a.active)
    return seen, said, still_open  # type: ignore[return-value]


@pytest.fixture
def device_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="vigil.device")  # stricter than the journal's INFO
    return caplog


@pytest.mark.parametrize("zeroise_after_duress", [False, True], ids=["default", "zeroise-both"])
def test_a_duress_cancel_cannot_be_told_from_a_real_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_logs: pytest.LogCaptureFixture,
    zeroise_after_duress: bool,
) -> None:  # fmt: skip
    alarm: dict[str, object] = {"zeroise_after_duress": zeroise_after_duress, **SAME_LENGTH}
    real, real_said, real_open = _run(tmp_path, "real", monkeypatch, device_logs,
                                      duress=False, alarm=alarm)  # fmt: skip
    coerced, coerced_said, coerced_open = _run(tmp_path, "duress", monkeypatch, device_logs,
                                               duress=True, alarm=alarm)  # fmt: skip
    # The two runs did differ where only the hub can see it: the runs are not trivially equal.
    assert [b.duress for b in real_said if isinstance(b, Cancel)] == [False, False]
    # The second cancel is coerced too; a device that erased its state after the first no
    # longer knows, and the hub keeps the alarm open all the same.
    second = not zeroise_after_duress
    assert [b.duress for b in coerced_said if isinstance(b, Cancel)] == [True, second]
    assert (real_open, coerced_open) == (1, 3)  # the tamper; the incident, the hold, the tamper
    assert [b.trigger for b in coerced_said if isinstance(b, Alarm)] == [
        Trigger.BUTTON, Trigger.BUTTON, Trigger.TAMPER]  # fmt: skip
    # What the captor sees is the same, to the byte count and the (driven) second.
    assert coerced.counts() == real.counts()
    assert coerced.up == real.up
    assert coerced.down == real.down
    assert coerced.felt == real.felt
    assert coerced.files == real.files
    assert coerced.log == real.log
    # And it is what a normal wearable does: raised, stored, cancelled; raised, stored,
    # cancelled ("show me it is off"); raised, stored (taken off).
    assert [p for _, p in real.felt] == [Pattern.RAISED, Pattern.STORED, Pattern.CANCELLED] * 2 + [
        Pattern.RAISED, Pattern.STORED]  # fmt: skip
    assert {size for _, size in real.up} == {580}
    print(f"\nparity ({'zeroise after every cancel' if zeroise_after_duress else 'default'}):")  # noqa: T201
    for key, value in real.counts().items():
        print(f"  {key:10} real {value:4}  duress {coerced.counts()[key]:4}")  # noqa: T201
    print(f"  {'files':10} real {real.files[-1]}  duress {coerced.files[-1]}")  # noqa: T201


def test_a_seized_card_and_journal_show_no_mode_kind_position_or_key(
    tmp_path: Path, device_logs: pytest.LogCaptureFixture
) -> None:
    with rig(tmp_path) as r:
        r.device.post(GpsFix(at=r.clock.now, fix=OAXACA))
        r.advance(5)
        r.hold()
        r.gesture(r.device.cfg.alarm.duress_cancel)
        r.advance(HEARTBEAT * 3)
        r.hold()  # joins the duress incident at the hub
        r.advance(HEARTBEAT * 3)
        beats = [m.body for m in r.uplinks(Kind.HEARTBEAT)]
        assert isinstance(beats[-1], Heartbeat)
        assert (beats[-1].mode, beats[-1].fix is not None) == (Mode.SILENT, True)
        (incident, joined) = sorted(r.alerts(AlertKind.ALARM), key=lambda a: a.id)
        assert incident.duress
        assert joined.note == f"under duress: joins the incident of alert {incident.id}"
        assert "alarm under duress" in r.audit()
        # Seized now, running: the card (WAL, shared memory and all) and the journal.
        raw = b"".join(p.read_bytes() for p in r.state_dir.iterdir() if p.is_file())
        # The journal: what the daemon logs at INFO and above (vigil-device without -v).
        journal = "\n".join(_device_lines(device_logs, r, level=logging.INFO)).encode()
        assert "accepted" not in journal.decode()  # downlinks are logged at DEBUG only
        keys = r.provisioned.device_keys
        private = (keys.signing.private_bytes_raw(), keys.kem.private_bytes_raw())
        for needle in (*SECRET_WORDS, *SECRET_PLACES, *private):
            assert needle not in raw, needle
            assert needle not in journal.lower(), needle
        assert b"-----BEGIN" not in raw  # no key file copied into the state
        assert {p.name for p in r.state_dir.iterdir()} <= {
            "outbox.sqlite3",
            "outbox.sqlite3-wal",
            "outbox.sqlite3-shm",
            STATE_KEY_FILE,
            rekey.FILE,  # the rotated downlink keys, sealed under the state key too
        }


def test_after_tamper_and_stored_the_state_is_crypto_erased(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.device.post(TamperClosed(r.clock.now))
        r.advance(5)
        r.hold()
        r.advance(HUB_TICK + 1)
        old_key = (r.state_dir / STATE_KEY_FILE).read_bytes()
        old_epoch = r.device.outbox.epoch
        before = {p.name: p.read_bytes() for p in r.state_dir.iterdir()}  # a copy of the card
        r.tamper()
        r.advance(HUB_TICK + 1)
        (tamper,) = [m for m in r.uplinks(Kind.ALARM) if m.body == Alarm(Trigger.TAMPER, None, 80)]
        assert r.device.outbox.epoch != old_epoch  # stored, then erased: a new life
        assert r.device.outbox.pending() == []
        new_key = (r.state_dir / STATE_KEY_FILE).read_bytes()
        assert new_key != old_key
        card = b"".join(p.read_bytes() for p in r.state_dir.iterdir() if p.is_file())
        assert old_key not in card  # the old key is nowhere on the card
        # The copy made before the erase cannot be read with what the card holds now.
        copy = tmp_path / "copy"
        copy.mkdir()
        for name, data in before.items():
            (copy / name).write_bytes(data)
        (copy / STATE_KEY_FILE).write_bytes(new_key)
        (copy / STATE_KEY_FILE).chmod(0o600)
        with pytest.raises(StateUnreadable):
            StateKey(copy / STATE_KEY_FILE, new_key).open("state/epoch", _row(copy, "epoch"))
        # Outside, an idle wearable: heartbeats go on at their times, in the new life.
        beats = [m for m in r.uplinks(Kind.HEARTBEAT) if m.epoch != old_epoch]
        r.advance(HEARTBEAT * 3)
        later = [m for m in r.uplinks(Kind.HEARTBEAT) if m.epoch != old_epoch]
        assert len(later) >= len(beats) + 2
        assert all(isinstance(m.body, Heartbeat) and m.body.mode is Mode.IDLE for m in later)
        assert tamper.epoch == old_epoch


def _row(folder: Path, name: str) -> bytes:
    import sqlite3  # noqa: PLC0415 - a forensic read of a copied card, nothing else uses it

    conn = sqlite3.connect(folder / "outbox.sqlite3")
    try:
        (sealed,) = conn.execute("SELECT sealed FROM state WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return bytes(sealed)
