"""Rotate the wearable's downlink KEM key, so a seized wearable cannot open past downlinks.

docs/protocol.md §11.2. The wearable makes a new downlink key pair (X25519, or
ML-KEM-768 + X25519 when it was enrolled with a hybrid key) at the start of
each life, at every start, and then once the previous one has been in use
(confirmed by the hub) for `[device] rotate_keys_every` seconds of uptime. Its public
key rides, a chunk at a time, in the room the heartbeats' 512-byte bucket pads
anyway (`announce`): no uplink changes size or time. A downlink that opens with
the new key proves the hub has it; the older rotated keys are then deleted
(`open`). The enrolled key in `device.key` stays: the hub seals to it until the
first rotated key of a life is verified.

The rotated private keys live in their own small file, `downlink-keys` in the
state folder (0600), sealed like every state record under `state.key`
(vigil.device.atrest), so the crypto-erase of the state erases them too: a
JSON document of the life (epoch) they belong to, and each key's PKCS#8 PEM
and whether the hub has confirmed it, oldest first. Keys of another life, or
that no longer open with the state key, are dropped on start: the hub never
seals a new life's downlinks to them.

    ring = Keyring.load(state_dir / FILE, enrolled=keys, epoch=outbox.epoch, every=86400.0,
                        clock=time.monotonic)
    message = ring.announce(heartbeat_message)      # maybe carries a chunk of a new key
    message = ring.open(envelope, device_id=..., hub=...)  # tries the newest key first
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from vigil.device.atrest import StateKey
from vigil.device.outbox import STATE_KEY_FILE
from vigil.errors import (
    DecryptionFailed,
    KeyFileError,
    StateUnreadable,
    StorageError,
    UnknownSuite,
    VigilError,
)
from vigil.wire.envelope import MAX_UPLINK_PAYLOAD, PrivateKem, downlink_keys, open_downlink
from vigil.wire.ids import DeviceId
from vigil.wire.keys import (
    DeviceKeys,
    HubPublicKeys,
    Suite,
    check_private_file,
    pem_blocks,
    private_pem,
    write_atomically,
)
from vigil.wire.liveness import Epoch
from vigil.wire.messages import Heartbeat, Message, encode_payload
from vigil.wire.rekey import chunk

_LOG = logging.getLogger(__name__)

FILE = "downlink-keys"
_RECORD = "keys/downlink"  # the sealed record's identity (vigil.device.atrest)
_Part = X25519PrivateKey | MLKEM768PrivateKey


@dataclass(frozen=True, slots=True)
class _Key:
    """One rotated downlink key pair: its private parts, and whether the hub has it."""

    parts: tuple[_Part, ...]  # (X25519,) or (ML-KEM-768, X25519)
    confirmed: bool = False

    @property
    def suite(self) -> Suite:
        return Suite.X25519_CHACHA20 if len(self.parts) == 1 else Suite.MLKEM768_X25519_CHACHA20

    @property
    def private(self) -> PrivateKem:
        if len(self.parts) == 1:
            return cast(X25519PrivateKey, self.parts[0])
        return hpke.MLKEM768X25519PrivateKey(cast(MLKEM768PrivateKey, self.parts[0]),
                                             cast(X25519PrivateKey, self.parts[1]))  # fmt: skip

    @property
    def announced(self) -> str:
        """The base64 text of the raw public key, as heartbeats announce it (vigil.wire.rekey):
        X25519's 32 bytes, or ML-KEM-768's 1184 then X25519's 32."""
        raw = b"".join(p.public_key().public_bytes_raw() for p in self.parts)
        return base64.b64encode(raw).decode()


class Keyring:
    """The wearable's rotated downlink keys: make, announce, use, and delete them."""

    def __init__(
        self, path: Path, keys: list[_Key], *, enrolled: DeviceKeys, epoch: Epoch,
        every: float, clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self._path, self._keys, self._enrolled, self._epoch = path, keys, enrolled, epoch
        self._every, self._clock = every, clock
        self._in_use_since = -math.inf  # keys from an earlier start are rotated out at once
        self._offset = 0  # where the next chunk of the newest key starts

    @classmethod
    def load(
        cls, path: Path, *, enrolled: DeviceKeys, epoch: Epoch, every: float,
        clock: Callable[[], float],
    ) -> Keyring:  # fmt: skip
        """The keys of this life from `path` (none if it is missing, unreadable or of
        another life: those are deleted)."""
        keys: list[_Key] = []
        if path.exists():
            try:
                keys = _read(path, epoch)
            except (VigilError, ValueError, KeyError, TypeError) as exc:
                _LOG.warning("downlink keys in %s dropped: %s", path, exc)
                path.unlink(missing_ok=True)
        return cls(path, keys, enrolled=enrolled, epoch=epoch, every=every, clock=clock)

    def new_life(self, epoch: Epoch) -> None:
        """The device's state was erased (a new epoch): delete every rotated key, since the
        hub never seals the new life's downlinks to them; a new one is made at once."""
        self._path.unlink(missing_ok=True)
        self._keys, self._epoch, self._offset = [], epoch, 0
        self._in_use_since = -math.inf

    @property
    def hybrid(self) -> bool:
        return self._enrolled.hybrid_kem is not None

    def candidates(self) -> list[Mapping[Suite, PrivateKem]]:
        """The keys to open a downlink with, newest first, the enrolled ones last."""
        rotated = [{k.suite: k.private} for k in reversed(self._keys)]
        return [*rotated, downlink_keys(self._enrolled)]

    # -- announcing -----------------------------------------------------------------------

    def announce(self, message: Message) -> Message:
        """`message` (a heartbeat) with the next chunk of an unconfirmed key, if it has room;
        a new key is made first when one is due."""
        if not isinstance(message.body, Heartbeat):
            return message
        self._rotate_if_due()
        if not self._keys or self._keys[-1].confirmed:
            return message
        text = self._keys[-1].announced
        probe = chunk(text, offset=self._offset, room=1)
        if probe is None:  # pragma: no cover - the offset always lies inside the text
            return message
        empty = replace(message, body=replace(message.body, rekey=replace(probe, data="A")))
        room = MAX_UPLINK_PAYLOAD - len(encode_payload(empty)) + 1
        part = chunk(text, offset=self._offset, room=room)
        if part is None:  # a heartbeat this full has no room this time
            return message
        self._offset = (self._offset + len(part.data)) % len(text)
        return replace(message, body=replace(message.body, rekey=part))

    def _rotate_if_due(self) -> None:
        now = self._clock()
        newest = self._keys[-1] if self._keys else None
        if newest is not None and not (
            newest.confirmed and now - self._in_use_since >= self._every
        ):
            return  # the hub has not confirmed the newest yet, or it is still young
        parts: tuple[_Part, ...] = (X25519PrivateKey.generate(),)
        if self.hybrid:
            parts = (MLKEM768PrivateKey.generate(), X25519PrivateKey.generate())
        try:
            self._save([*self._keys, _Key(parts)])
        except StorageError:  # never announce a key that would not survive a restart
            _LOG.exception("a new downlink key could not be saved; announcing none")
            return
        self._keys.append(_Key(parts))
        self._offset = 0
        _LOG.info("new downlink key made")

    # -- using ----------------------------------------------------------------------------

    def open(self, payload: bytes, *, device_id: DeviceId, hub: HubPublicKeys) -> Message:
        """Open a downlink with the newest key that can; a rotated key that opens one is
        confirmed, and every older rotated key is deleted (forward secrecy)."""
        error: Exception = UnknownSuite("no downlink key")
        candidates = self.candidates()
        for index, keys in enumerate(candidates):
            try:
                message = open_downlink(payload, device_id=device_id, device_keys=keys, hub=hub)
            except (DecryptionFailed, UnknownSuite) as exc:
                error = exc
                continue
            if index < len(self._keys):
                self._confirm(len(self._keys) - 1 - index)
            return message
        raise error

    def _confirm(self, position: int) -> None:
        if self._keys[position].confirmed and position == 0:
            return
        kept = [replace(self._keys[position], confirmed=True), *self._keys[position + 1 :]]
        try:
            self._save(kept)
        except StorageError:  # keep them all in memory; the next downlink tries again
            _LOG.exception("downlink keys could not be saved")
            return
        dropped, self._keys = position, kept
        self._in_use_since = self._clock()
        _LOG.info("downlink key confirmed by the hub; %d older key(s) deleted", dropped)

    def _save(self, keys: list[_Key]) -> None:
        entries = [{"pem": private_pem(k.parts).decode(), "confirmed": k.confirmed} for k in keys]
        doc = {"epoch": self._epoch.hex, "keys": entries}
        state_key = StateKey.load(self._path.with_name(STATE_KEY_FILE))
        if state_key is None:
            raise StorageError(f"no state key beside {self._path}: the keys would be in clear")
        try:
            sealed = state_key.seal(_RECORD, json.dumps(doc).encode())
            write_atomically(self._path, sealed, mode=0o600)
        except OSError as exc:
            raise StorageError(f"cannot write {self._path}: {exc.strerror or exc}") from exc


def _read(path: Path, epoch: Epoch) -> list[_Key]:
    check_private_file(path)
    state_key = StateKey.load(path.with_name(STATE_KEY_FILE))
    if state_key is None:
        raise StateUnreadable("the state key is gone")
    doc = json.loads(state_key.open(_RECORD, path.read_bytes()))
    if doc["epoch"] != epoch.hex:
        raise ValueError(f"they belong to another life of the device ({doc['epoch']})")
    keys = []
    for entry in doc["keys"]:
        parts = tuple(pem_blocks(entry["pem"].encode()))
        if not (len(parts) == 1 and isinstance(parts[0], X25519PrivateKey)) and not (
            len(parts) == 2 and isinstance(parts[0], MLKEM768PrivateKey)
            and isinstance(parts[1], X25519PrivateKey)
        ):  # fmt: skip
            raise KeyFileError(f"{path}: a downlink key is one X25519 or ML-KEM-768 + X25519")
        keys.append(_Key(cast(tuple[_Part, ...], parts), bool(entry["confirmed"])))
    return keys
