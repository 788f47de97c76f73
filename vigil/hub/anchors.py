"""Signed heads of the audit chain (pure): one text line, signed with the hub's Ed25519 key.

The same line is stored in the log as a checkpoint entry and appended to the
anchor file the operator keeps outside the database:

    vigil-audit-anchor v1 entry=<id> hash=<64 hex> at=<YYYY-MM-DDTHH:MM:SSZ>
        key=sha256:<64 hex> sig=<base64 of 64 bytes>          (one line, split here)

`hash` is the chain hash of entry `id`: it commits to every entry 1..id. `key`
is the SHA-256 of the hub's raw Ed25519 public key, so a reader sees which key
to check with. The signature covers everything before ` sig=`, prefixed with a
label that no other signature of the hub key starts with (downlinks are signed
under "vigil/v<n> signature"), so an anchor can never be replayed as a downlink
or the other way round.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vigil.errors import BadSignature, MalformedAnchor

MAGIC = "vigil-audit-anchor"
VERSION = "v1"
_SIGNING_LABEL = b"vigil audit anchor v1\x00"
_MAX_LINE = 400  # a v1 line is at most 310 characters
_MAX_ID = 2**63 - 1  # the store's BIGINT
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_LINE = re.compile(
    rf"{MAGIC} (?P<version>v\d{{1,3}}) entry=(?P<entry>[1-9]\d{{0,18}}) "
    r"hash=(?P<hash>[0-9a-f]{64}) at=(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) "
    r"key=(?P<key>sha256:[0-9a-f]{64}) sig=(?P<sig>[A-Za-z0-9+/]{86}==)"
)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def fingerprint(key: Ed25519PublicKey) -> str:
    """`sha256:<hex>` of the raw public key: how anchors name the key that signed them."""
    return "sha256:" + hashlib.sha256(key.public_bytes_raw()).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedHead:
    """The hub's signed statement "the chain's entry `entry_id` has hash `hash`"."""

    entry_id: int
    hash: str
    at: int  # whole seconds since the epoch, UTC
    key: str  # fingerprint() of the signing key
    signature: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.entry_id <= _MAX_ID:
            raise MalformedAnchor(f"entry id must be in 1..{_MAX_ID}, got {self.entry_id}")
        if not _HEX64.fullmatch(self.hash):
            raise MalformedAnchor("hash must be 64 lowercase hex characters")
        if not 0 <= self.at < 253402300800:  # year 10000
            raise MalformedAnchor(f"time {self.at} is outside years 1970..9999")
        if not (self.key.startswith("sha256:") and _HEX64.fullmatch(self.key[7:])):
            raise MalformedAnchor("key must be sha256:<64 lowercase hex>")
        if len(self.signature) != 64:
            raise MalformedAnchor(f"an Ed25519 signature is 64 bytes, got {len(self.signature)}")

    def statement(self) -> str:
        """The signed part of the line."""
        at = datetime.fromtimestamp(self.at, UTC).strftime(_TIME_FORMAT)
        return f"{MAGIC} {VERSION} entry={self.entry_id} hash={self.hash} at={at} key={self.key}"

    def to_line(self) -> str:
        return f"{self.statement()} sig={base64.b64encode(self.signature).decode()}"

    def when(self) -> str:
        """The signing time for people: `2025-11-24 16:00:00 UTC`."""
        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def check(self, key: Ed25519PublicKey) -> None:
        """Raise `BadSignature` unless `key` made this statement."""
        if self.key != fingerprint(key):
            raise BadSignature(f"signed by key {self.key}, not by this hub's {fingerprint(key)}")
        try:
            key.verify(self.signature, _SIGNING_LABEL + self.statement().encode())
        except InvalidSignature as exc:
            raise BadSignature("the signature does not verify: forged or altered") from exc


def sign_head(key: Ed25519PrivateKey, *, entry_id: int, hash: str, at: float) -> SignedHead:
    """Sign "entry `entry_id` has chain hash `hash`" at time `at` (seconds, UTC)."""
    if not math.isfinite(at):
        raise MalformedAnchor(f"time must be finite, got {at!r}")
    unsigned = SignedHead(entry_id, hash, int(at), fingerprint(key.public_key()), bytes(64))
    signature = key.sign(_SIGNING_LABEL + unsigned.statement().encode())
    return SignedHead(entry_id, hash, int(at), unsigned.key, signature)


def parse(line: str) -> SignedHead:
    """Read one anchor line; raise `MalformedAnchor` naming what is wrong."""
    if len(line) > _MAX_LINE:
        raise MalformedAnchor(f"line of {len(line)} characters is too long for an anchor")
    text = line.rstrip("\r\n")
    if not text.startswith(MAGIC + " "):
        raise MalformedAnchor(f"does not start with '{MAGIC} '")
    found = _LINE.fullmatch(text)
    if found is None:
        version = text.split(" ", 2)[1] if text.count(" ") >= 2 else ""
        if re.fullmatch(r"v\d{1,3}", version) and version != VERSION:
            raise MalformedAnchor(f"anchor format {version}; this build reads {VERSION}")
        raise MalformedAnchor("is truncated or altered (fields missing, reordered or malformed)")
    if found["version"] != VERSION:
        raise MalformedAnchor(f"anchor format {found['version']}; this build reads {VERSION}")
    try:
        when = datetime.strptime(found["at"], _TIME_FORMAT).replace(tzinfo=UTC)
        signature = base64.b64decode(found["sig"], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise MalformedAnchor(f"has an invalid time or signature: {exc}") from exc
    head = SignedHead(
        int(found["entry"]), found["hash"], int(when.timestamp()), found["key"], signature
    )
    if head.to_line() != text:  # one canonical spelling, so the signed text is unambiguous
        raise MalformedAnchor("is not in canonical form")
    return head
