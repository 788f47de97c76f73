"""Keep the wearable's state unreadable without one small key file: erasing it erases the state.

Every record the device keeps (outbox payloads, the alarm memory, the replay
window, the epoch, the seq counter) is sealed with ChaCha20-Poly1305 under a
32-byte key in `state.key` (mode 0600, beside the outbox) before it is
written, with a fresh random 96-bit nonce per record and the record's
identity (`outbox/<seq>`, `state/<name>`) as associated data, so a record
cannot be moved to another row. The plaintext is framed (2-byte length) and
zero-padded to a multiple of `BLOCK` bytes: a record's size says nothing of
what it holds (an alarm and a cancel, an idle and a silent memory, look alike).

Because the plaintext is never handed to SQLite, it never reaches the WAL,
free pages or the card's spare blocks. Deleting `state.key` is the
crypto-erase (docs/protocol.md §8): flash cards remap blocks and cannot be
trusted to overwrite, but 32 bytes gone make every copy of every record noise.
ChaCha20-Poly1305 rather than AES-GCM: the Pi Zero's Cortex-A53 has no AES
instructions.

    key = StateKey.create(state_dir / "state.key")
    blob = key.seal("state/epoch", b"9f3c0a5e1b2d4c6f")
    key.open("state/epoch", blob)   # b"9f3c..."; StateUnreadable if wrong key or tampered
    key.erase()                     # the crypto-erase
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vigil.errors import InsecureKeyFile, StateUnreadable, StorageError

_LOG = logging.getLogger(__name__)

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
BLOCK: Final = 512  # plaintexts are padded to a multiple of this
_LABEL: Final = b"vigil/v2 state\x00"
_MAX_RECORD: Final = 0xFFFF


class StateKey:
    """The key that seals every record of the device's state; its file is the whole secret."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a state key is {KEY_BYTES} bytes")
        self.path = path
        self._aead = ChaCha20Poly1305(key)

    @classmethod
    def load(cls, path: Path) -> StateKey | None:
        """Read the key at `path`; None if it is missing or not a key (the state is then lost).

        Raise `InsecureKeyFile` if group or others may read or write it.
        """
        try:
            mode = path.stat().st_mode
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the state key {path}: {exc}") from exc
        if stat.S_IMODE(mode) & 0o077:
            raise InsecureKeyFile(
                f"{path} is readable or writable by others (mode {stat.S_IMODE(mode):o}); "
                f"run 'chmod 600 {path}'"
            )
        if len(raw) != KEY_BYTES:
            _LOG.warning("state key %s is damaged (%d bytes); it is replaced", path, len(raw))
            return None
        return cls(path, raw)

    @classmethod
    def create(cls, path: Path) -> StateKey:
        """Make a new random key at `path` (mode 0600, on disk before this returns)."""
        key = os.urandom(KEY_BYTES)
        tmp = path.with_name(path.name + ".new")
        try:
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(path)
            _sync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write the state key {path}: {exc}") from exc
        return cls(path, key)

    def seal(self, where: str, plaintext: bytes) -> bytes:
        """Encrypt one record for row `where`: nonce || ChaCha20-Poly1305(padded plaintext)."""
        if len(plaintext) > _MAX_RECORD:
            raise ValueError(f"a state record holds at most {_MAX_RECORD} bytes")
        framed = len(plaintext).to_bytes(2, "big") + plaintext
        padded = framed + bytes(-len(framed) % BLOCK)
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, padded, _LABEL + where.encode())

    def open(self, where: str, sealed: bytes) -> bytes:
        """Decrypt a record sealed for row `where`; raise `StateUnreadable` otherwise."""
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            padded = self._aead.decrypt(nonce, body, _LABEL + where.encode())
        except (InvalidTag, ValueError) as exc:
            raise StateUnreadable(f"state record {where} cannot be decrypted with "
                                  f"{self.path}") from exc  # fmt: skip
        length = int.from_bytes(padded[:2], "big")
        if len(padded) < 2 + length:
            raise StateUnreadable(f"state record {where} is malformed")
        return padded[2 : 2 + length]

    def erase(self) -> None:
        """Crypto-erase: overwrite the key file (best effort on flash) and delete it."""
        erase_key_file(self.path)


def erase_key_file(path: Path) -> None:
    """Overwrite `path` with zeros, sync, delete it and sync its folder; missing is fine."""
    try:
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.write(bytes(size))
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot erase the state key {path}: {exc}") from exc
    _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    """Make a create, rename or delete in `folder` durable (its directory entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
