"""Key files (0600, refuse loose modes), device ids, topics and the replay window."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.errors import BadConfigValue, InsecureKeyFile, KeyFileError, TopicMismatch
from vigil.wire import DeviceId, DeviceKeys, HubKeys, ReplayWindow, Verdict
from vigil.wire.keys import DevicePublicKeys, HubPublicKeys, write_atomically
from vigil.wire.replay import WINDOW_SIZE
from vigil.wire.topics import down_topic, parse_topic, shared_up_filter, up_topic


def test_device_keys_round_trip_with_mode_0600(tmp_path: Path) -> None:
    keys = DeviceKeys.generate()
    path = tmp_path / "keys" / "device.key"
    keys.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = DeviceKeys.load(path)
    assert loaded.public().to_text() == keys.public().to_text()


def test_hub_keys_round_trip(tmp_path: Path) -> None:
    keys = HubKeys.generate()
    keys.save(tmp_path / "hub.key")
    loaded = HubKeys.load(tmp_path / "hub.key")
    assert loaded.public().to_text() == keys.public().to_text()
    assert HubPublicKeys.from_text(keys.public().to_text()).to_text() == keys.public().to_text()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_loose_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "device.key"
    DeviceKeys.generate().save(path)
    path.chmod(mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        DeviceKeys.load(path)


def test_existing_keys_are_not_overwritten_without_force(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    first = DeviceKeys.generate()
    first.save(path)
    with pytest.raises(KeyFileError, match="--force"):
        DeviceKeys.generate().save(path)
    assert DeviceKeys.load(path).public().to_text() == first.public().to_text()
    DeviceKeys.generate().save(path, force=True)
    assert DeviceKeys.load(path).public().to_text() != first.public().to_text()


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_malformed_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        DeviceKeys.load(path)


def test_hub_key_file_is_not_a_device_key_file(tmp_path: Path) -> None:
    HubKeys.generate().save(tmp_path / "hub.key")  # four keys, as a hybrid device's file
    with pytest.raises(KeyFileError, match="key 3 should be X25519PrivateKey"):
        DeviceKeys.load(tmp_path / "hub.key")


def test_a_device_key_file_holds_a_hybrid_downlink_key_or_none(tmp_path: Path) -> None:
    for hybrid, blocks in ((False, 2), (True, 4)):
        keys = DeviceKeys.generate(hybrid=hybrid)
        keys.save(tmp_path / f"{blocks}.key")
        loaded = DeviceKeys.load(tmp_path / f"{blocks}.key")
        assert (tmp_path / f"{blocks}.key").read_bytes().count(b"BEGIN PRIVATE KEY") == blocks
        assert loaded.public().to_text() == keys.public().to_text()
        assert ("hybrid_kem" in loaded.public().to_text()) is hybrid
        assert DevicePublicKeys.from_text(keys.public().to_text()) == keys.public()


def test_a_device_key_file_with_half_a_hybrid_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    keys = DeviceKeys.generate(hybrid=True)
    pem = path.parent / "full.key"
    keys.save(pem)
    blocks = pem.read_bytes().split(b"-----END PRIVATE KEY-----\n")
    path.write_bytes(
        b"-----END PRIVATE KEY-----\n".join(blocks[:3]) + b"-----END PRIVATE KEY-----\n"
    )
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="must hold 2 or 4 private keys, found 3"):
        DeviceKeys.load(path)


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        DeviceKeys.load(tmp_path / "nope.key")


@pytest.mark.parametrize(
    "text",
    ["", "ed25519:", "x25519:AAAA", "ed25519:!!!!", "rsa:AAAA", 42, None],
)
def test_public_key_text_is_validated(text: object) -> None:
    with pytest.raises(BadConfigValue):
        DevicePublicKeys.from_text({"signing": text, "kem": text})


def test_device_ids_are_random_and_parse_strictly() -> None:
    a, b = DeviceId.generate(), DeviceId.generate()
    assert a != b
    assert DeviceId.parse(a.hex) == a
    for bad in ["", "AB" * 16, "0" * 31, "0" * 33, "g" * 32, "alice-phone"]:
        with pytest.raises(BadConfigValue):
            DeviceId.parse(bad)


def test_topics() -> None:
    device = DeviceId.generate()
    assert parse_topic(up_topic(device)) == (device, "up")
    assert parse_topic(down_topic(device)) == (device, "down")
    assert shared_up_filter("hub") == "$share/hub/vigil/v1/+/up"
    for bad in ["vigil/v1/+/up", "vigil/v2/" + device.hex + "/up", "vigil/v1/x/up", "a/b"]:
        with pytest.raises(TopicMismatch):
            parse_topic(bad)
    with pytest.raises(ValueError, match="group"):
        shared_up_filter("a/b")


def test_replay_window_decisions() -> None:
    w = ReplayWindow()
    assert w.check(0) is Verdict.ACCEPT
    w = w.accept(10).accept(7)
    assert [w.check(s) for s in (10, 7, 8, 11)] == [
        Verdict.DUPLICATE,
        Verdict.DUPLICATE,
        Verdict.ACCEPT,
        Verdict.ACCEPT,
    ]
    w = w.accept(10 + WINDOW_SIZE)
    assert w.check(10) is Verdict.TOO_OLD
    assert w.check(11) is Verdict.ACCEPT
    assert w.check(-1) is Verdict.TOO_OLD
    with pytest.raises(ValueError, match="not acceptable"):
        w.accept(10 + WINDOW_SIZE)


@given(st.lists(st.integers(0, 3 * WINDOW_SIZE), max_size=60))
def test_replay_window_never_accepts_twice(seqs: list[int]) -> None:
    w, accepted = ReplayWindow(), set()
    for seq in seqs:
        if w.check(seq) is Verdict.ACCEPT:
            assert seq not in accepted
            accepted.add(seq)
            w = w.accept(seq)
        else:
            assert seq in accepted or seq <= w.highest - WINDOW_SIZE


def test_a_failed_write_leaves_no_copy_of_the_secret(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()  # the rename onto a folder fails after the data is written
    with pytest.raises(IsADirectoryError):
        write_atomically(tmp_path / "taken", b"secret", mode=0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_folder_is_not_a_key_file(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    with pytest.raises(KeyFileError, match="is a folder") as raised:
        DeviceKeys.load(tmp_path)
    assert "chmod" not in str(raised.value).replace(str(tmp_path), "")
    with pytest.raises(KeyFileError, match=f"e.g. --out {tmp_path / 'device.key'}"):
        DeviceKeys.generate().save(tmp_path, force=True)
