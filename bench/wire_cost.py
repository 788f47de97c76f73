"""Per-message cost of seal/open against bare HPKE of the same plaintext size.

The baseline is the library's single-shot HPKE encrypt/decrypt of a 512-byte
plaintext (what any HPKE-based design pays); the difference is Vigil's
framing, JSON encoding, padding and the Ed25519 signature.
"""

from __future__ import annotations

from bench.timing import per_op, report
from vigil.wire import (
    AgedFix,
    Alarm,
    ClockSource,
    DeviceId,
    DeviceKeys,
    Fix,
    HubKeys,
    Message,
    Suite,
    Trigger,
    envelope_size,
    open_uplink,
    seal_uplink,
)
from vigil.wire.liveness import Epoch


def main() -> None:
    hub, device, device_id = HubKeys.generate(), DeviceKeys.generate(), DeviceId.generate()
    fix = AgedFix(
        Fix(lat=52.52, lon=13.405, fix_time=1764000000.0, quality=1, satellites=8, hdop=0.9),
        age=3.2,
    )
    message = Message(1, Alarm(Trigger.BUTTON, fix, 80), 1764000000.0, ClockSource.NTP,
                      epoch=Epoch.generate(), nonce="0e" * 16)  # fmt: skip
    print("== wire: seal/open per alarm message ==")  # noqa: T201
    for suite in Suite:
        key = hub.kem if suite is Suite.X25519_CHACHA20 else hub.hybrid_kem
        public = key.public_key()
        bare = suite.hpke
        plaintext = bytes(512)
        ct = bare.encrypt(plaintext, public)
        base_seal = per_op(lambda: bare.encrypt(plaintext, public), n=300)  # noqa: B023
        base_open = per_op(lambda: bare.decrypt(ct, key), n=300)  # noqa: B023

        def seal(s: Suite = suite) -> bytes:
            return seal_uplink(
                message, device_id=device_id, device_keys=device, hub=hub.public(), suite=s
            )

        envelope = seal()
        verify = device.public().signing

        def open_() -> Message:
            return open_uplink(
                envelope,  # noqa: B023
                device_id=device_id,
                hub_keys=hub,
                lookup=lambda _: verify,  # noqa: B023
            )

        report(f"seal {suite.name} ({envelope_size(suite)} B)", per_op(seal, n=300), base_seal)
        report(f"open {suite.name}", per_op(open_, n=300), base_open)


if __name__ == "__main__":
    main()
