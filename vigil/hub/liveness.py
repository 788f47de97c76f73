"""What the device's own word proves (docs/protocol.md §8), and a seq signed twice (§7).

The hub never takes arrival time as proof of life: a broker can hold a genuine
heartbeat for hours. An uplink proves the device was alive at the hub time its
echoed nonce was minted, and nothing later. The device's `sent_at` is not used:
a wearable without an RTC has none, and an NTP step backwards or forwards must
neither hide a stashed heartbeat nor make a live device look silent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vigil.hub import alerts
from vigil.hub.store import AlertKind, DeviceRecord, Transaction
from vigil.wire.ids import DeviceId
from vigil.wire.liveness import NonceMinter
from vigil.wire.messages import Message

_LOG = logging.getLogger(__name__)


def proven_at(nonces: NonceMinter, device_id: DeviceId, message: Message) -> float | None:
    """The hub time `message` was provably made after, or None if it proves nothing."""
    if message.nonce is None:
        return None
    minted = nonces.minted_at(device_id, message.nonce)
    if minted is None:
        _LOG.warning("device %s seq=%s echoes a nonce this hub never made", device_id,
                     message.seq)  # fmt: skip
        return None
    return minted


def conflict(
    tx: Transaction,
    device: DeviceRecord,
    message: Message,
    *,
    now: float,
    audit: Callable[[str, str, str], None],
) -> None:
    """Another message under a stored (epoch, seq): the device's key signs in two places."""
    reason = (
        f"two different messages were signed as seq {message.seq} of epoch {message.epoch}: "
        "the device's key may be cloned (revoke it if the wearer cannot explain)"
    )
    draft = alerts.suspicion(device, AlertKind.CONFLICT, trigger="conflict", now=now,
                             reason=reason)  # fmt: skip
    alert = tx.alerts.open(draft)
    audit("conflicting message", f"alert {alert.id}", reason)
    _LOG.warning("device %s: %s (alert %s)", device.device_id, reason, alert.id)
