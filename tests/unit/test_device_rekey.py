"""The wearable's downlink keyring (docs/protocol.md §11.2), on a driven clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.parties import EPOCH, NONCE, OTHER_EPOCH, parties
from vigil.device.atrest import StateKey
from vigil.device.outbox import STATE_KEY_FILE
from vigil.device.rekey import FILE, Keyring
from vigil.errors import DecryptionFailed
from vigil.wire import DeviceKeys, Heartbeat, Message, Stored
from vigil.wire.envelope import seal_downlink
from vigil.wire.rekey import assemble

P = parties()
DAY = 86400.0


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def ring(tmp_path: Path, clock: Clock, *, hybrid: bool = False) -> Keyring:
    if not (tmp_path / STATE_KEY_FILE).exists():
        StateKey.create(tmp_path / STATE_KEY_FILE)
    enrolled = DeviceKeys.generate(hybrid=hybrid)
    return Keyring.load(tmp_path / FILE, enrolled=enrolled, epoch=EPOCH, every=DAY, clock=clock)


def heartbeat(seq: int) -> Message:
    return Message(seq, Heartbeat(battery=80, signal=70), epoch=EPOCH, nonce=NONCE)


def announced(r: Keyring, *, first_seq: int = 0) -> str:
    """Collect heartbeats' chunks until the key they announce is whole."""
    parts: dict[int, str] = {}
    for seq in range(first_seq, first_seq + 100):
        chunk = r.announce(heartbeat(seq)).body.rekey  # type: ignore[union-attr]
        assert chunk is not None
        parts[chunk.offset] = chunk.data
        text = assemble(chunk.key, chunk.size, parts)
        if text is not None:
            return text
    raise AssertionError("the key was never whole")


def receipt_to(r: Keyring, text: str, tmp_path: Path) -> bytes:
    """A receipt the hub seals to the announced key."""
    device = DeviceKeys.generate(hybrid=r.hybrid).public().rotated(text)
    return seal_downlink(Message(1, Stored(0, "d1" * 16), epoch=EPOCH, nonce=NONCE),
                         device_id=P.device_id, hub_keys=P.hub, device=device)  # fmt: skip


@pytest.mark.parametrize("hybrid", [False, True], ids=["x25519", "hybrid"])
def test_a_key_is_announced_confirmed_and_its_predecessor_deleted(
    tmp_path: Path, hybrid: bool
) -> None:
    clock = Clock()
    r = ring(tmp_path, clock, hybrid=hybrid)
    first = announced(r)
    old = receipt_to(r, first, tmp_path)
    r.open(old, device_id=P.device_id, hub=P.hub.public())  # confirms the first key
    assert r.announce(heartbeat(200)).body.rekey is None  # type: ignore[union-attr]
    clock.now += DAY
    second = announced(r, first_seq=300)
    assert second != first
    r.open(receipt_to(r, second, tmp_path), device_id=P.device_id, hub=P.hub.public())
    assert b"PRIVATE KEY" not in (tmp_path / FILE).read_bytes()  # sealed under state.key
    assert (tmp_path / FILE).stat().st_mode & 0o777 == 0o600
    again = Keyring.load(tmp_path / FILE, enrolled=DeviceKeys.generate(), epoch=EPOCH,
                         every=DAY, clock=clock)  # fmt: skip
    assert len(again.candidates()) == 2  # the newest rotated key, and the enrolled ones
    with pytest.raises(DecryptionFailed):
        r.open(old, device_id=P.device_id, hub=P.hub.public())


def test_keys_of_another_life_or_a_garbled_file_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    r = ring(tmp_path, clock)
    announced(r)
    assert (tmp_path / FILE).exists()
    other = Keyring.load(tmp_path / FILE, enrolled=DeviceKeys.generate(), epoch=OTHER_EPOCH,
                         every=DAY, clock=clock)  # fmt: skip
    assert len(other.candidates()) == 1  # only the enrolled keys
    assert not (tmp_path / FILE).exists()
    (tmp_path / FILE).write_text("{not json")
    (tmp_path / FILE).chmod(0o600)
    assert len(ring(tmp_path, clock).candidates()) == 1
    assert not (tmp_path / FILE).exists()


def test_erasing_the_state_key_erases_the_rotated_keys(tmp_path: Path) -> None:
    clock = Clock()
    announced(ring(tmp_path, clock))
    assert (tmp_path / FILE).exists()
    StateKey.create(tmp_path / STATE_KEY_FILE)  # the crypto-erase made a new state key
    assert len(ring(tmp_path, clock).candidates()) == 1
    (tmp_path / STATE_KEY_FILE).unlink()  # and with none at all, no key is kept in clear
    bare = Keyring.load(tmp_path / FILE, enrolled=DeviceKeys.generate(), epoch=EPOCH,
                        every=DAY, clock=clock)  # fmt: skip
    assert bare.announce(heartbeat(0)).body.rekey is None  # type: ignore[union-attr]
    assert not (tmp_path / FILE).exists()


def test_a_new_life_deletes_every_rotated_key(tmp_path: Path) -> None:
    r = ring(tmp_path, Clock())
    announced(r)
    r.new_life(OTHER_EPOCH)
    assert not (tmp_path / FILE).exists()
    assert len(r.candidates()) == 1
