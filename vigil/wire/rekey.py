"""Downlink key rotation on the wire: a new KEM public key, announced in heartbeat chunks.

docs/protocol.md §11.2. A device makes a new downlink KEM key pair from time to
time and announces its public key inside its regular heartbeats (signed and
encrypted with them, in room the 512-byte bucket pads anyway), so no uplink
changes size or time. A key is named by its digest; a heartbeat carries one
chunk of it as the compact text

    rekey = "<key: 16 hex>:<offset>:<size>:<data: base64 characters>"

where the announced text is the standard base64 of the raw public key (32 bytes
for X25519, 1216 for the ML-KEM-768 + X25519 hybrid; the device's downlink
suite says which), `size` its length in characters and `data` the characters
from `offset`. The hub joins the chunks of one key and takes it only when they
cover it exactly and its digest matches (`assemble`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from vigil.errors import MalformedMessage

KEY_ID_BYTES = 8
MAX_KEY_TEXT = 2048  # characters; a hybrid key is 1624
_CHUNK = re.compile(
    r"([0-9a-f]{16}):(0|[1-9][0-9]{0,3}):([1-9][0-9]{0,3}):([A-Za-z0-9+/=]{1,2048})"
)


def key_id(text: str) -> str:
    """The name of an announced key: SHA-256 over its base64 text, cut to 8 bytes, in hex."""
    h = hashes.Hash(hashes.SHA256())
    h.update(text.encode())
    return h.finalize()[:KEY_ID_BYTES].hex()


@dataclass(frozen=True, slots=True)
class KeyChunk:
    """Characters `offset` .. `offset + len(data)` of the `size`-character key `key`."""

    key: str
    offset: int
    size: int
    data: str

    def __post_init__(self) -> None:
        if _CHUNK.fullmatch(self.to_text()) is None:
            raise MalformedMessage(f"a key chunk is '<key>:<offset>:<size>:<base64>', got "
                                   f"{self.to_text()!r:.60}")  # fmt: skip
        if self.size > MAX_KEY_TEXT or self.offset + len(self.data) > self.size:
            raise MalformedMessage(
                f"key chunk {self.offset}+{len(self.data)} does not fit a key of {self.size}"
            )

    def to_text(self) -> str:
        return f"{self.key}:{self.offset}:{self.size}:{self.data}"

    @classmethod
    def parse(cls, text: object) -> KeyChunk:
        if not isinstance(text, str) or len(text) > 64 + MAX_KEY_TEXT:
            raise MalformedMessage(f"a key chunk is a string, got {text!r:.40}")
        found = _CHUNK.fullmatch(text)
        if found is None:
            raise MalformedMessage(f"malformed key chunk {text!r:.60}")
        key, offset, size, data = found.groups()
        return cls(key, int(offset), int(size), data)


def chunk(text: str, *, offset: int, room: int) -> KeyChunk | None:
    """The chunk of `text` from `offset` holding at most `room` characters (None: no room)."""
    if room <= 0 or not 0 <= offset < len(text):
        return None
    return KeyChunk(key_id(text), offset, len(text), text[offset : offset + room])


def assemble(key: str, size: int, parts: Mapping[int, str]) -> str | None:
    """The announced text if `parts` (offset -> data) cover exactly `size` characters of one
    text whose digest is `key`; None while some is missing, or if they do not agree."""
    text = [""] * size
    for offset, data in parts.items():
        for i, char in enumerate(data, start=offset):
            if i >= size or text[i] not in ("", char):
                return None
            text[i] = char
    if "" in text:
        return None
    joined = "".join(text)
    return joined if key_id(joined) == key else None
