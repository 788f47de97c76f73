"""Key pairs of devices and hubs: generate, save (mode 0600), load, and text forms.

Private keys live in one PEM file per identity, a fixed sequence of PKCS#8
blocks (docs/protocol.md §6). Public keys travel as short text strings
`<alg>:<base64>` in config files and the hub's device registry.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import pwd
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from vigil.errors import BadConfigValue, InsecureKeyFile, KeyFileError


class Suite(enum.IntEnum):
    """HPKE cipher suites, by the id carried in the envelope header."""

    X25519_CHACHA20 = 1  # DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305
    MLKEM768_X25519_CHACHA20 = 2  # ML-KEM-768 + X25519 hybrid KEM, HKDF-SHA256, ChaCha20-Poly1305

    @property
    def hpke(self) -> hpke.Suite:
        kem = hpke.KEM.X25519 if self is Suite.X25519_CHACHA20 else hpke.KEM.MLKEM768_X25519
        return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)

    @property
    def hpke_enc_length(self) -> int:
        """Bytes of HPKE's encapsulated key (`enc`) for this suite."""
        return 32 if self is Suite.X25519_CHACHA20 else 1120


_BEGIN = b"-----BEGIN PRIVATE KEY-----"
_END = b"-----END PRIVATE KEY-----"


# -- text forms of public keys ---------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: object, alg: str, length: int) -> bytes:
    if not isinstance(text, str) or not text.startswith(f"{alg}:"):
        raise BadConfigValue(f"expected a public key '{alg}:<base64>', got {text!r:.80}")
    try:
        raw = base64.b64decode(text[len(alg) + 1 :], validate=True)
    except binascii.Error as exc:
        raise BadConfigValue(f"public key {text!r:.40} is not valid base64") from exc
    if len(raw) != length:
        raise BadConfigValue(f"a {alg} public key is {length} bytes, got {len(raw)}")
    return raw


def ed25519_to_text(key: Ed25519PublicKey) -> str:
    return "ed25519:" + _b64(key.public_bytes_raw())


def ed25519_from_text(text: object) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_unb64(text, "ed25519", 32))


def x25519_to_text(key: X25519PublicKey) -> str:
    return "x25519:" + _b64(key.public_bytes_raw())


def x25519_from_text(text: object) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(_unb64(text, "x25519", 32))


_MLKEM768_PUBLIC = 1184


def hybrid_to_text(mlkem: MLKEM768PublicKey, x25519: X25519PublicKey) -> str:
    return "mlkem768x25519:" + _b64(mlkem.public_bytes_raw() + x25519.public_bytes_raw())


def hybrid_from_text(text: object) -> hpke.MLKEM768X25519PublicKey:
    return hpke.MLKEM768X25519PublicKey(*_hybrid_parts(text))


# -- key pairs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DevicePublicKeys:
    """What the hub knows of a device: its signing key and its downlink KEM key(s).

    A device with a hybrid key (`hybrid_text`, `mlkem768x25519:…`) gets its downlinks
    in suite 2; one without, in suite 1 to `kem` (docs/protocol.md §5).
    """

    signing: Ed25519PublicKey
    kem: X25519PublicKey
    hybrid_text: str | None = None

    def __post_init__(self) -> None:
        if self.hybrid_text is not None:
            hybrid_from_text(self.hybrid_text)  # a bad key is refused here, not at sealing

    @property
    def hybrid_kem(self) -> hpke.MLKEM768X25519PublicKey | None:
        return None if self.hybrid_text is None else hybrid_from_text(self.hybrid_text)

    @property
    def downlink_suite(self) -> Suite:
        """The suite downlinks to this device use: hybrid when it has a hybrid key."""
        hybrid = self.hybrid_text is not None
        return Suite.MLKEM768_X25519_CHACHA20 if hybrid else Suite.X25519_CHACHA20

    def rotated(self, announced: str) -> DevicePublicKeys:
        """These keys with the downlink key replaced by a rotated one, given as the base64
        of its raw public key (vigil.wire.rekey), of the same kind: hybrid stays hybrid."""
        if self.hybrid_text is not None:
            return DevicePublicKeys(self.signing, self.kem, f"mlkem768x25519:{announced}")
        return DevicePublicKeys(self.signing, x25519_from_text(f"x25519:{announced}"))

    def to_text(self) -> dict[str, str]:
        doc = {"signing": ed25519_to_text(self.signing), "kem": x25519_to_text(self.kem)}
        return doc if self.hybrid_text is None else {**doc, "hybrid_kem": self.hybrid_text}

    @classmethod
    def from_text(cls, doc: Mapping[str, object]) -> DevicePublicKeys:
        hybrid = doc.get("hybrid_kem")
        return cls(
            ed25519_from_text(doc.get("signing")),
            x25519_from_text(doc.get("kem")),
            None if hybrid is None else str(hybrid_to_text(*_hybrid_parts(hybrid))),
        )


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """A device's private keys: Ed25519 to sign uplinks, X25519 (and, for suite 2, an
    ML-KEM-768 + X25519 pair) to open downlinks."""

    signing: Ed25519PrivateKey
    kem: X25519PrivateKey
    hybrid_mlkem: MLKEM768PrivateKey | None = None
    hybrid_x25519: X25519PrivateKey | None = None

    def __post_init__(self) -> None:
        if (self.hybrid_mlkem is None) != (self.hybrid_x25519 is None):
            raise KeyFileError("a hybrid key needs both its ML-KEM-768 and its X25519 half")

    @classmethod
    def generate(cls, *, hybrid: bool = False) -> DeviceKeys:
        """New keys; with `hybrid`, a hybrid downlink key too (suite 2)."""
        keys = cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
        if not hybrid:
            return keys
        return replace(keys, hybrid_mlkem=MLKEM768PrivateKey.generate(),
                       hybrid_x25519=X25519PrivateKey.generate())  # fmt: skip

    @property
    def hybrid_kem(self) -> hpke.MLKEM768X25519PrivateKey | None:
        if self.hybrid_mlkem is None or self.hybrid_x25519 is None:
            return None
        return hpke.MLKEM768X25519PrivateKey(self.hybrid_mlkem, self.hybrid_x25519)

    def public(self) -> DevicePublicKeys:
        hybrid = None
        if self.hybrid_mlkem is not None and self.hybrid_x25519 is not None:
            hybrid = hybrid_to_text(
                self.hybrid_mlkem.public_key(), self.hybrid_x25519.public_key()
            )
        return DevicePublicKeys(self.signing.public_key(), self.kem.public_key(), hybrid)

    def save(self, path: Path, *, force: bool = False) -> None:
        keys: list[_PrivateKey] = [self.signing, self.kem]
        if self.hybrid_mlkem is not None and self.hybrid_x25519 is not None:
            keys += [self.hybrid_x25519, self.hybrid_mlkem]  # not the hub file's order
        _save_pem(path, keys, force=force, example="device.key")

    @classmethod
    def load(cls, path: Path) -> DeviceKeys:
        """Two blocks (suite 1 only) or four (with the hybrid downlink key)."""
        b = _load_pem(path, _DEVICE_BLOCKS, optional=2)
        if len(b) == 2:
            return cls(cast(Ed25519PrivateKey, b[0]), cast(X25519PrivateKey, b[1]))
        return cls(
            cast(Ed25519PrivateKey, b[0]),
            cast(X25519PrivateKey, b[1]),
            cast(MLKEM768PrivateKey, b[3]),
            cast(X25519PrivateKey, b[2]),
        )


# The hybrid pair comes X25519 first, so that a hub's key file (ML-KEM first) is refused.
_DEVICE_BLOCKS = (Ed25519PrivateKey, X25519PrivateKey, X25519PrivateKey, MLKEM768PrivateKey)


def _hybrid_parts(text: object) -> tuple[MLKEM768PublicKey, X25519PublicKey]:
    raw = _unb64(text, "mlkem768x25519", _MLKEM768_PUBLIC + 32)
    try:
        mlkem = MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PUBLIC])
    except ValueError as exc:
        raise BadConfigValue(f"invalid ML-KEM-768 public key: {exc}") from exc
    return mlkem, X25519PublicKey.from_public_bytes(raw[_MLKEM768_PUBLIC:])


@dataclass(frozen=True, slots=True)
class HubPublicKeys:
    """What a device knows of its hub: the uplink KEM keys and the downlink signing key."""

    signing: Ed25519PublicKey
    kem: X25519PublicKey
    hybrid_kem: hpke.MLKEM768X25519PublicKey
    hybrid_text: str  # the hybrid key class has no byte export; keep its text form

    def to_text(self) -> dict[str, str]:
        return {
            "signing": ed25519_to_text(self.signing),
            "kem": x25519_to_text(self.kem),
            "hybrid_kem": self.hybrid_text,
        }

    @classmethod
    def from_text(cls, doc: dict[str, object]) -> HubPublicKeys:
        text = doc.get("hybrid_kem")
        return cls(
            ed25519_from_text(doc.get("signing")),
            x25519_from_text(doc.get("kem")),
            hybrid_from_text(text),
            str(text),
        )


@dataclass(frozen=True, slots=True)
class HubKeys:
    """The hub's private keys: Ed25519 to sign downlinks, one KEM key per suite."""

    signing: Ed25519PrivateKey
    kem: X25519PrivateKey
    hybrid_mlkem: MLKEM768PrivateKey
    hybrid_x25519: X25519PrivateKey

    @classmethod
    def generate(cls) -> HubKeys:
        return cls(
            Ed25519PrivateKey.generate(),
            X25519PrivateKey.generate(),
            MLKEM768PrivateKey.generate(),
            X25519PrivateKey.generate(),
        )

    @property
    def hybrid_kem(self) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(self.hybrid_mlkem, self.hybrid_x25519)

    def nonce_secret(self) -> bytes:
        """Secret input for the heartbeat-nonce MAC key (every hub instance derives the same)."""
        return self.signing.private_bytes_raw()

    def public(self) -> HubPublicKeys:
        mlkem, x25519 = self.hybrid_mlkem.public_key(), self.hybrid_x25519.public_key()
        return HubPublicKeys(
            self.signing.public_key(),
            self.kem.public_key(),
            hpke.MLKEM768X25519PublicKey(mlkem, x25519),
            hybrid_to_text(mlkem, x25519),
        )

    def save(self, path: Path, *, force: bool = False) -> None:
        keys: list[_PrivateKey] = [self.signing, self.kem, self.hybrid_mlkem, self.hybrid_x25519]
        _save_pem(path, keys, force=force, example="hub.key")

    @classmethod
    def load(cls, path: Path) -> HubKeys:
        kinds = (Ed25519PrivateKey, X25519PrivateKey, MLKEM768PrivateKey, X25519PrivateKey)
        b = _load_pem(path, kinds)
        return cls(
            cast(Ed25519PrivateKey, b[0]),
            cast(X25519PrivateKey, b[1]),
            cast(MLKEM768PrivateKey, b[2]),
            cast(X25519PrivateKey, b[3]),
        )


# -- PEM files ---------------------------------------------------------------------------

_PrivateKey = Ed25519PrivateKey | X25519PrivateKey | MLKEM768PrivateKey


def private_pem(keys: Sequence[_PrivateKey]) -> bytes:
    """The keys as unencrypted PKCS#8 PEM blocks, in order."""
    return b"".join(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for k in keys
    )


def pem_blocks(data: bytes) -> list[object]:
    """The private keys of PEM `data`, in order (`ValueError`, `TypeError` if unreadable)."""
    blocks = [b + _END for b in data.split(_END) if _BEGIN in b]
    return [serialization.load_pem_private_key(b.strip(), password=None) for b in blocks]


def _save_pem(path: Path, keys: list[_PrivateKey], *, force: bool, example: str) -> None:
    """Write the keys atomically with mode 0600; refuse to replace a file unless `force`.

    `example` is a file name to suggest when `path` is a folder.
    """
    pem = private_pem(keys)
    try:
        if path.is_dir():
            raise KeyFileError(f"{path} is a folder; give the key file's own path, e.g. "
                               f"--out {path / example}")  # fmt: skip
        if path.exists() and not force:
            raise KeyFileError(f"{path} already exists; pass --force to replace these keys")
        write_atomically(path, pem, mode=0o600)
    except PermissionError as exc:
        raise KeyFileError(f"cannot write key file {path}: {_denied(path.parent)}; run it "
                           "with sudo (or as that folder's owner), or choose another "
                           "--out") from exc  # fmt: skip
    except OSError as exc:  # a full disk, a read-only file system
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror or exc}") from exc


def write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` via a synced temporary file that has `mode` from the start.

    A secret is never briefly readable by others, and a power cut leaves either
    the old file or the new one, never half of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a stray copy of a secret behind
        raise


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _denied(folder: Path) -> str:
    """Why this user may not write in `folder` (or the nearest folder above it that exists)."""
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    me = _user(os.geteuid())
    try:
        info = folder.stat()
    except OSError:
        return f"permission denied: {me} may not enter the folders above {folder}"
    owner, mode = _user(info.st_uid), stat.S_IMODE(info.st_mode)
    return (f"permission denied: {folder} belongs to {owner} (mode {mode:04o}) and this "
            f"command runs as {me}")  # fmt: skip


def _run_as(owner: str) -> str:
    return "with sudo" if owner == "root" else f"as {owner} (sudo -u {owner} …) or with sudo"


def check_private_file(path: Path) -> None:
    """Refuse a secret file that is missing, unreadable, not a file, or open to group or others.

    The `chmod` advice names the file, and only when the file's own mode is the
    problem: a folder given as a key path, or a folder this user cannot enter,
    gets its own message.
    """
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist") from exc
    except PermissionError as exc:
        why = _denied(path.parent)
        raise KeyFileError(f"cannot read key file {path}: {why}; run it as the service's "
                           "user (sudo -u …) or with sudo") from exc  # fmt: skip
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise KeyFileError(f"key file {path} is a folder; give the path of the key file itself")
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFile(f"key file {path} has mode {mode:04o}, so others may read it; "
                              f"run 'chmod 600 {path}'")  # fmt: skip
    if not os.access(path, os.R_OK):
        owner, me = _user(info.st_uid), _user(os.geteuid())
        raise KeyFileError(f"cannot read key file {path}: it belongs to {owner} (mode "
                           f"{mode:04o}) and this command runs as {me}; run it "
                           f"{_run_as(owner)}")  # fmt: skip


def _load_pem(path: Path, kinds: tuple[type, ...], *, optional: int = 0) -> list[object]:
    """Read the PEM blocks of `path`, checking their number, order and key types.

    The last `optional` kinds may be missing, all together.
    """
    check_private_file(path)
    count = len(kinds)
    try:
        data = path.read_bytes()
    except OSError as exc:  # checked just above; this is a race or an I/O error
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    blocks = [b + _END for b in data.split(_END) if _BEGIN in b]
    if optional and len(blocks) == count - optional:
        kinds, count = kinds[: count - optional], count - optional
    if len(blocks) != count:
        expected = f"{count - optional} or {count}" if optional else str(count)
        raise KeyFileError(f"{path} must hold {expected} private keys, found {len(blocks)}")
    try:
        keys = pem_blocks(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} holds a key that cannot be read: {exc}") from exc
    for number, (key, kind) in enumerate(zip(keys, kinds, strict=True), start=1):
        if not isinstance(key, kind):
            raise KeyFileError(
                f"{path}: key {number} should be {kind.__name__}, is {type(key).__name__}"
            )
    return list(keys)
