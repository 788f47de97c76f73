"""Key material for one test hub and two test devices, generated fresh per test session."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vigil.errors import UnknownDevice
from vigil.wire import DeviceId, DeviceKeys, HubKeys
from vigil.wire.liveness import Epoch


@dataclass(frozen=True)
class Parties:
    hub: HubKeys
    device_id: DeviceId
    device: DeviceKeys
    other_id: DeviceId
    other: DeviceKeys

    def lookup(self, device_id: DeviceId) -> Ed25519PublicKey:
        """The hub's registry of enrolled devices, reduced to a function."""
        keys = {self.device_id: self.device, self.other_id: self.other}.get(device_id)
        if keys is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        return keys.public().signing


@cache
def parties() -> Parties:
    return Parties(
        HubKeys.generate(),
        DeviceId.generate(),
        DeviceKeys.generate(),
        DeviceId.generate(),
        DeviceKeys.generate(),
    )


# Protocol version 2 values for messages built by hand in tests: the device's life,
# a receipt's digest and a hub nonce (the device cannot check a nonce's MAC, only its form).
EPOCH = Epoch(bytes.fromhex("0011223344556677"))
OTHER_EPOCH = Epoch(bytes.fromhex("8899aabbccddeeff"))  # another life of the same device
DIGEST = "d1" * 16
NONCE = "0e" * 16
