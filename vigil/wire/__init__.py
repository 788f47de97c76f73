"""What the wearable and the hub share: the wire format, its keys, the MQTT and systemd glue.

See docs/protocol.md for the specification this package implements.
"""

from __future__ import annotations

from vigil.wire.envelope import (
    BUCKETS,
    MAX_ENVELOPE,
    VERSION,
    Header,
    envelope_size,
    open_downlink,
    open_uplink,
    peek_header,
    seal_downlink,
    seal_uplink,
)
from vigil.wire.fix import AgedFix, Fix
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DeviceKeys, DevicePublicKeys, HubKeys, HubPublicKeys, Suite
from vigil.wire.messages import (
    Acknowledged,
    Alarm,
    Body,
    Cancel,
    Checkin,
    ClockSource,
    Config,
    Direction,
    DownlinkBody,
    Heartbeat,
    Kind,
    Message,
    Position,
    Resolved,
    Stored,
    Trigger,
    UplinkBody,
)
from vigil.wire.replay import ReplayWindow, Verdict

__all__ = [
    "BUCKETS",
    "MAX_ENVELOPE",
    "VERSION",
    "Acknowledged",
    "AgedFix",
    "Alarm",
    "Body",
    "Cancel",
    "Checkin",
    "ClockSource",
    "Config",
    "DeviceId",
    "DeviceKeys",
    "DevicePublicKeys",
    "Direction",
    "DownlinkBody",
    "Fix",
    "Header",
    "Heartbeat",
    "HubKeys",
    "HubPublicKeys",
    "Kind",
    "Message",
    "Position",
    "ReplayWindow",
    "Resolved",
    "Stored",
    "Suite",
    "Trigger",
    "UplinkBody",
    "Verdict",
    "envelope_size",
    "open_downlink",
    "open_uplink",
    "peek_header",
    "seal_downlink",
    "seal_uplink",
]
