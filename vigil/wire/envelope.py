"""The Vigil envelope, version 1: sign, pad, then HPKE-seal to the recipient.

    envelope  = header(20) || enc || ct
    header    = version(1) || suite(1) || direction(1) || flags(1) = 0 || device_id(16)
    info      = "vigil/v2 envelope" 0x00 || header            (HPKE info: binds all of the header)
    plaintext = len(2, big-endian) || payload || Ed25519 signature(64) || zero padding
    signature = Sign(sender, "vigil/v2 signature" 0x00 || header || payload)

The plaintext is padded to the smallest of `BUCKETS` that holds it, so every
uplink kind is the same length on the wire. Full specification:
docs/protocol.md.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from vigil.errors import (
    BadSignature,
    DecryptionFailed,
    MalformedEnvelope,
    MessageTooLarge,
    OversizedEnvelope,
    TopicMismatch,
    TruncatedEnvelope,
    UnknownSuite,
    UnsupportedVersion,
    WrongDirection,
)
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DeviceKeys, DevicePublicKeys, HubKeys, HubPublicKeys, Suite
from vigil.wire.messages import Direction, Message, decode_payload, encode_payload

VERSION = 2
BUCKETS = (512, 2048)
MAX_ENVELOPE = 4096
SIGNATURE_BYTES = 64
TAG_BYTES = 16  # ChaCha20-Poly1305
_HEADER = struct.Struct(">BBBB16s")
HEADER_BYTES = _HEADER.size
_LENGTH = struct.Struct(">H")
MAX_UPLINK_PAYLOAD = BUCKETS[0] - _LENGTH.size - SIGNATURE_BYTES  # what fits an uplink
_INFO_LABEL = b"vigil/v2 envelope\x00"
_SIGNATURE_LABEL = b"vigil/v2 signature\x00"

PublicKem = X25519PublicKey | hpke.MLKEM768X25519PublicKey
PrivateKem = X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
Verifier = Callable[[DeviceId], Ed25519PublicKey]


@dataclass(frozen=True, slots=True)
class Header:
    """The cleartext part of an envelope; everything in it is bound into HPKE's info."""

    suite: Suite
    direction: Direction
    device_id: DeviceId
    version: int = VERSION

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.version, self.suite, self.direction, 0, self.device_id.raw)


def envelope_size(suite: Suite, bucket: int = BUCKETS[0]) -> int:
    """Bytes on the wire of an envelope whose plaintext fills `bucket`."""
    return HEADER_BYTES + suite.hpke_enc_length + bucket + TAG_BYTES


def seal(
    message: Message,
    *,
    device_id: DeviceId,
    signer: Ed25519PrivateKey,
    recipient: PublicKem,
    suite: Suite = Suite.X25519_CHACHA20,
) -> bytes:
    """Sign, pad and encrypt `message` for `recipient`; return the envelope bytes."""
    return seal_payload(
        encode_payload(message), message.direction,
        device_id=device_id, signer=signer, recipient=recipient, suite=suite,
    )  # fmt: skip


def seal_payload(
    payload: bytes,
    direction: Direction,
    *,
    device_id: DeviceId,
    signer: Ed25519PrivateKey,
    recipient: PublicKem,
    suite: Suite = Suite.X25519_CHACHA20,
) -> bytes:
    """`seal` for a payload already encoded: every call is a new envelope (fresh HPKE `enc`)."""
    header = Header(suite, direction, device_id).to_bytes()
    signature = signer.sign(_signed_bytes(header, payload))
    plaintext = _pad(_LENGTH.pack(len(payload)) + payload + signature)
    return header + suite.hpke.encrypt(plaintext, recipient, info=_INFO_LABEL + header)


def peek_header(data: bytes) -> Header:
    """Parse and check the cleartext header only (sizes, version, suite, direction)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEnvelope(f"an envelope is bytes, got {type(data).__name__}")
    if len(data) > MAX_ENVELOPE:
        raise OversizedEnvelope(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE}")
    if len(data) < HEADER_BYTES:
        raise TruncatedEnvelope(f"envelope of {len(data)} bytes has no complete header")
    version, suite_id, direction_id, flags, raw_id = _HEADER.unpack_from(data)
    if version != VERSION:
        raise UnsupportedVersion(f"envelope version {version}, this build speaks {VERSION}")
    try:
        suite, direction = Suite(suite_id), Direction(direction_id)
    except ValueError as exc:
        kind = UnknownSuite if suite_id not in Suite._value2member_map_ else MalformedEnvelope
        raise kind(f"envelope header names suite {suite_id}, direction {direction_id}") from exc
    if flags != 0:
        raise MalformedEnvelope(f"envelope flags must be 0 in version {VERSION}, got {flags}")
    _check_length(len(data), suite)
    return Header(suite, direction, DeviceId(raw_id), version)


def open(
    data: bytes,
    *,
    direction: Direction,
    device_id: DeviceId,
    recipient_keys: Mapping[Suite, PrivateKem],
    verifier: Verifier,
) -> Message:
    """Check, decrypt and verify an envelope that arrived for `device_id`.

    Raises only `VigilError` subclasses: `ProtocolError` for bad framing, a moved
    topic or an unknown device (from `verifier`), `CryptoError` for a failed
    decryption or signature.
    """
    header = peek_header(data)
    return _open(data, header, direction=direction, device_id=device_id,
                 recipient_keys=recipient_keys, verifier=verifier)[0]  # fmt: skip


def _open(
    data: bytes,
    header: Header,
    *,
    direction: Direction,
    device_id: DeviceId,
    recipient_keys: Mapping[Suite, PrivateKem],
    verifier: Verifier,
) -> tuple[Message, bytes]:
    """`open` for a header already checked; the message and the signed payload it came in."""
    if header.direction is not direction:
        raise WrongDirection(f"expected a {direction.name.lower()}link envelope")
    if header.device_id != device_id:
        raise TopicMismatch(f"envelope for device {header.device_id} arrived as {device_id}")
    key = recipient_keys.get(header.suite)
    if key is None:
        raise UnknownSuite(f"no key for suite {header.suite.name} here")
    verify_key = verifier(header.device_id)
    raw_header = bytes(data[:HEADER_BYTES])
    try:
        plaintext = header.suite.hpke.decrypt(
            bytes(data[HEADER_BYTES:]), key, info=_INFO_LABEL + raw_header
        )
    except InvalidTag as exc:
        raise DecryptionFailed("envelope does not decrypt: wrong key or altered bytes") from exc
    except ValueError as exc:  # e.g. an encapsulated key that is not a valid point
        raise DecryptionFailed(f"envelope does not decrypt: {exc}") from exc
    payload, signature = _unpad(plaintext)
    try:
        verify_key.verify(signature, _signed_bytes(raw_header, payload))
    except InvalidSignature as exc:
        raise BadSignature(f"signature is not by device {header.device_id}'s sender") from exc
    message = decode_payload(payload, direction)
    if message.direction is not direction:  # pragma: no cover - decode_payload ensures it
        raise WrongDirection("payload kind does not match the envelope direction")
    return message, payload


# -- the two directions, with the keys each side holds --------------------------------


def seal_uplink(
    message: Message,
    *,
    device_id: DeviceId,
    device_keys: DeviceKeys,
    hub: HubPublicKeys,
    suite: Suite = Suite.X25519_CHACHA20,
) -> bytes:
    """Device side: seal an uplink message to the hub."""
    return seal_uplink_payload(
        encode_payload(message), device_id=device_id, device_keys=device_keys, hub=hub, suite=suite
    )


def seal_uplink_payload(
    payload: bytes,
    *,
    device_id: DeviceId,
    device_keys: DeviceKeys,
    hub: HubPublicKeys,
    suite: Suite = Suite.X25519_CHACHA20,
) -> bytes:
    """Device side: seal a stored uplink payload again; a resend is a new envelope (§8)."""
    recipient: PublicKem = hub.kem if suite is Suite.X25519_CHACHA20 else hub.hybrid_kem
    return seal_payload(
        payload, Direction.UP,
        device_id=device_id, signer=device_keys.signing, recipient=recipient, suite=suite,
    )  # fmt: skip


def open_uplink(
    data: bytes, *, device_id: DeviceId, hub_keys: HubKeys, lookup: Verifier
) -> Message:
    """Hub side: open an uplink that arrived on `device_id`'s topic.

    Every uplink kind fits the smallest bucket; one in a larger bucket would mark
    itself on the wire, so it is refused before any decryption (§5).
    """
    return open_uplink_payload(data, device_id=device_id, hub_keys=hub_keys, lookup=lookup)[0]


def open_uplink_payload(
    data: bytes, *, device_id: DeviceId, hub_keys: HubKeys, lookup: Verifier
) -> tuple[Message, bytes]:
    """`open_uplink`, and the signed payload as the device sent it (what its receipt's
    digest is of, and what the hub stores)."""
    header = peek_header(data)
    suite = header.suite  # build only the key this envelope needs
    if len(data) != envelope_size(suite):
        raise MalformedEnvelope(
            f"uplink of {len(data)} bytes: uplinks are {envelope_size(suite)} bytes in this suite"
        )
    key: PrivateKem = hub_keys.kem if suite is Suite.X25519_CHACHA20 else hub_keys.hybrid_kem
    return _open(data, header, direction=Direction.UP, device_id=device_id,
                 recipient_keys={suite: key}, verifier=lookup)  # fmt: skip


def seal_downlink(
    message: Message, *, device_id: DeviceId, hub_keys: HubKeys, device: DevicePublicKeys
) -> bytes:
    """Hub side: seal a downlink to one device, signed with the hub's key.

    The suite is the device's: hybrid (2) when `device` has a hybrid key, else 1
    (the header's suite byte says which, docs/protocol.md §11.2).
    """
    suite = device.downlink_suite
    hybrid = device.hybrid_kem
    recipient: PublicKem = device.kem if hybrid is None else hybrid
    return seal(
        message, device_id=device_id, signer=hub_keys.signing, recipient=recipient, suite=suite
    )


def downlink_keys(device_keys: DeviceKeys) -> dict[Suite, PrivateKem]:
    """The KEM keys a device opens downlinks with, by suite."""
    keys: dict[Suite, PrivateKem] = {Suite.X25519_CHACHA20: device_keys.kem}
    hybrid = device_keys.hybrid_kem
    if hybrid is not None:
        keys[Suite.MLKEM768_X25519_CHACHA20] = hybrid
    return keys


def open_downlink(
    data: bytes,
    *,
    device_id: DeviceId,
    device_keys: DeviceKeys | Mapping[Suite, PrivateKem],
    hub: HubPublicKeys,
) -> Message:
    """Device side: open a downlink; anything not signed by our hub is rejected.

    `device_keys` is the device's key file, or the KEM keys to try, by suite (a
    rotated downlink key, vigil.device.rekey).
    """

    def hub_key(_: DeviceId) -> Ed25519PublicKey:
        return hub.signing

    keys = downlink_keys(device_keys) if isinstance(device_keys, DeviceKeys) else device_keys
    return open(
        data, direction=Direction.DOWN, device_id=device_id, recipient_keys=keys,
        verifier=hub_key,
    )  # fmt: skip


# -- the spec's steps ----------------------------------------------------------------------


def _signed_bytes(header: bytes, payload: bytes) -> bytes:
    return _SIGNATURE_LABEL + header + payload


def _pad(framed: bytes) -> bytes:
    for bucket in BUCKETS:
        if len(framed) <= bucket:
            return framed + bytes(bucket - len(framed))
    raise MessageTooLarge(f"message of {len(framed)} bytes exceeds the largest bucket")


def _unpad(plaintext: bytes) -> tuple[bytes, bytes]:
    if len(plaintext) not in BUCKETS:  # pragma: no cover - _check_length made sure
        raise MalformedEnvelope(f"plaintext of {len(plaintext)} bytes is no bucket size")
    (length,) = _LENGTH.unpack_from(plaintext)
    end = _LENGTH.size + length + SIGNATURE_BYTES
    if end > len(plaintext) or any(plaintext[end:]):
        raise MalformedEnvelope("plaintext framing is wrong (length or padding)")
    payload = plaintext[_LENGTH.size : _LENGTH.size + length]
    return payload, plaintext[_LENGTH.size + length : end]


def _check_length(total: int, suite: Suite) -> None:
    sizes = [envelope_size(suite, bucket) for bucket in BUCKETS]
    if total < sizes[0]:
        raise TruncatedEnvelope(f"envelope of {total} bytes is shorter than {sizes[0]}")
    if total not in sizes:
        raise MalformedEnvelope(f"envelope of {total} bytes is none of the sizes {sizes}")
