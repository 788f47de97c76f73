"""What binds a receipt to one uplink of one life of a device, and proves a heartbeat fresh.

Protocol version 2 (docs/protocol.md §7, §8):

- An **epoch** is 8 random bytes a device makes when its state is new (first
  boot, a rewritten card, a lost outbox). The hub keys uplinks, alerts and
  replay windows by (device, epoch, seq), so a device whose seqs restart is a
  new life, never a duplicate of the old one.
- A **digest** names the exact uplink a receipt answers: SHA-256 over the
  signed payload, cut to 16 bytes. Retries re-seal the same payload (fresh HPKE
  encapsulation), so every copy has one digest.
- A **nonce** is minted by the hub into every downlink and echoed by the
  device's next heartbeat. It carries the hub time it was minted and a MAC
  under a key only the hub has, so the echo proves the heartbeat was made after
  that time, whatever the device's clock says and however long the broker held
  the heartbeat. Stateless: any hub instance holding the hub key checks any
  nonce, with no per-device table.
"""

from __future__ import annotations

import math
import secrets
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.constant_time import bytes_eq
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vigil.errors import MalformedMessage
from vigil.wire.ids import DeviceId

EPOCH_BYTES = 8
DIGEST_BYTES = 16
_NONCE_TIME = struct.Struct(">Q")  # hub time of minting, in milliseconds
_NONCE_MAC_BYTES = 8
NONCE_BYTES = _NONCE_TIME.size + _NONCE_MAC_BYTES
_NONCE_INFO = b"vigil/v2 heartbeat nonce"


def _hex(text: object, length: int, what: str) -> bytes:
    if not isinstance(text, str) or len(text) != 2 * length:
        raise MalformedMessage(f"{what} must be {2 * length} hex characters, got {text!r:.40}")
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise MalformedMessage(f"{what} is not hex: {text!r:.40}") from exc
    if raw.hex() != text:
        raise MalformedMessage(f"{what} must be lowercase hex, got {text!r:.40}")
    return raw


@dataclass(frozen=True, slots=True)
class Epoch:
    """One life of a device's state: 8 random bytes, written as 16 lowercase hex characters."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != EPOCH_BYTES:
            raise MalformedMessage(f"an epoch is {EPOCH_BYTES} bytes, got {len(self.raw)}")

    @classmethod
    def generate(cls) -> Epoch:
        return cls(secrets.token_bytes(EPOCH_BYTES))

    @classmethod
    def parse(cls, text: object) -> Epoch:
        return cls(_hex(text, EPOCH_BYTES, "epoch"))

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex


def uplink_digest(payload: bytes) -> str:
    """The digest a receipt carries for the uplink whose signed payload is `payload`."""
    h = hashes.Hash(hashes.SHA256())
    h.update(payload)
    return h.finalize()[:DIGEST_BYTES].hex()


def check_digest(text: object) -> str:
    """Validate a digest's text form (32 lowercase hex characters) and return it."""
    _hex(text, DIGEST_BYTES, "digest")
    return str(text)


def check_nonce(text: object) -> str:
    """Validate a nonce's text form (32 lowercase hex characters) and return it."""
    _hex(text, NONCE_BYTES, "nonce")
    return str(text)


class NonceMinter:
    """Mint and check the hub's heartbeat nonces; the MAC key is derived from the hub's key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("a nonce key needs at least 32 bytes of secret")
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_NONCE_INFO).derive(
            secret
        )

    def mint(self, device_id: DeviceId, *, at: float) -> str:
        """A nonce for `device_id` saying "minted at hub time `at`"."""
        if not math.isfinite(at) or at < 0:
            raise ValueError(f"cannot mint a nonce at time {at!r}")
        stamp = _NONCE_TIME.pack(round(at * 1000))
        return (stamp + self._mac(device_id, stamp)).hex()

    def minted_at(self, device_id: DeviceId, nonce: str) -> float | None:
        """The hub time `nonce` was minted for `device_id`, or None if it is not ours."""
        try:
            raw = _hex(nonce, NONCE_BYTES, "nonce")
        except MalformedMessage:
            return None
        stamp, mac = raw[: _NONCE_TIME.size], raw[_NONCE_TIME.size :]
        if not bytes_eq(mac, self._mac(device_id, stamp)):
            return None
        return float(_NONCE_TIME.unpack(stamp)[0]) / 1000.0

    def _mac(self, device_id: DeviceId, stamp: bytes) -> bytes:
        mac = hmac.HMAC(self._key, hashes.SHA256())
        mac.update(device_id.raw + stamp)
        return mac.finalize()[:_NONCE_MAC_BYTES]
