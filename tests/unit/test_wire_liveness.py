"""Epochs, receipt digests and heartbeat nonces (docs/protocol.md §7-§8, version 2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.parties import parties
from vigil.errors import MalformedMessage
from vigil.wire.ids import DeviceId
from vigil.wire.liveness import (
    NONCE_BYTES,
    Epoch,
    NonceMinter,
    check_digest,
    check_nonce,
    uplink_digest,
)

DEVICE = DeviceId(bytes(range(16)))
OTHER = DeviceId(bytes(range(1, 17)))


@pytest.fixture(scope="module")
def minter() -> NonceMinter:
    return NonceMinter(parties().hub.nonce_secret())


@given(at=st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_a_nonce_says_when_it_was_minted(at: float) -> None:
    minter = NonceMinter(parties().hub.nonce_secret())
    nonce = minter.mint(DEVICE, at=at)
    assert len(nonce) == 2 * NONCE_BYTES
    assert minter.minted_at(DEVICE, nonce) == pytest.approx(at, abs=0.001)


def test_a_nonce_is_bound_to_its_device_and_its_hub(minter: NonceMinter) -> None:
    nonce = minter.mint(DEVICE, at=1000.0)
    assert minter.minted_at(OTHER, nonce) is None
    another_hub = NonceMinter(b"\x01" * 32)
    assert another_hub.minted_at(DEVICE, nonce) is None


def test_two_hub_instances_with_one_key_agree() -> None:
    secret = parties().hub.nonce_secret()
    nonce = NonceMinter(secret).mint(DEVICE, at=5.0)
    assert NonceMinter(secret).minted_at(DEVICE, nonce) == 5.0


@pytest.mark.parametrize("bit", range(NONCE_BYTES * 8))
def test_any_flipped_bit_makes_a_nonce_foreign(minter: NonceMinter, bit: int) -> None:
    raw = bytearray(bytes.fromhex(minter.mint(DEVICE, at=1234.5)))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert minter.minted_at(DEVICE, raw.hex()) is None


@pytest.mark.parametrize(
    "garbage", ["", "00", "zz" * NONCE_BYTES, "AB" * NONCE_BYTES, "0" * 31, None, 7, b"x"]
)
def test_garbage_nonces_are_refused_not_raised(minter: NonceMinter, garbage: object) -> None:
    assert minter.minted_at(DEVICE, garbage) is None  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage):
        check_nonce(garbage)


@pytest.mark.parametrize("at", [-1.0, float("nan"), float("inf")])
def test_a_nonce_cannot_be_minted_at_a_nonsense_time(minter: NonceMinter, at: float) -> None:
    with pytest.raises(ValueError, match="cannot mint"):
        minter.mint(DEVICE, at=at)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NonceMinter(b"short")


def test_epochs_are_random_and_round_trip() -> None:
    a, b = Epoch.generate(), Epoch.generate()
    assert a != b
    assert Epoch.parse(a.hex) == a
    assert len(str(a)) == 16


@pytest.mark.parametrize("text", ["", "0" * 15, "0" * 17, "G" * 16, "AA" * 8, None, 12])
def test_bad_epochs_are_malformed(text: object) -> None:
    with pytest.raises(MalformedMessage, match="epoch"):
        Epoch.parse(text)


@given(payload=st.binary(max_size=600))
def test_a_digest_names_one_payload(payload: bytes) -> None:
    digest = uplink_digest(payload)
    assert check_digest(digest) == digest
    assert uplink_digest(payload + b"\x00") != digest
