"""Device identifiers: random, opaque, 16 bytes; lowercase hex on topics and in files."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from vigil.errors import BadConfigValue

DEVICE_ID_BYTES = 16
_HEX_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class DeviceId:
    """An opaque device id. It never encodes a name, owner or place.

    >>> DeviceId.parse("00" * 16).hex
    '00000000000000000000000000000000'
    """

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != DEVICE_ID_BYTES:
            raise BadConfigValue(f"a device id is {DEVICE_ID_BYTES} bytes, got {self.raw!r}")

    @classmethod
    def generate(cls) -> DeviceId:
        """Make a fresh random id (from the OS CSPRNG)."""
        return cls(secrets.token_bytes(DEVICE_ID_BYTES))

    @classmethod
    def parse(cls, text: str) -> DeviceId:
        """Parse the 32-character lowercase hex form used on topics and in files."""
        if not isinstance(text, str) or not _HEX_RE.fullmatch(text):
            raise BadConfigValue(f"a device id is 32 lowercase hex characters, got {text!r}")
        return cls(bytes.fromhex(text))

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex
