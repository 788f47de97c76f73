"""MQTT topics of protocol version 1: `vigil/v1/<device-id>/up` and `.../down`."""

from __future__ import annotations

from vigil.errors import TopicMismatch
from vigil.wire.ids import DeviceId

PREFIX = "vigil/v1"
UP_FILTER = f"{PREFIX}/+/up"


def up_topic(device_id: DeviceId) -> str:
    """Topic a device publishes its envelopes to."""
    return f"{PREFIX}/{device_id.hex}/up"


def down_topic(device_id: DeviceId) -> str:
    """Topic the hub publishes a device's downlinks to."""
    return f"{PREFIX}/{device_id.hex}/down"


def shared_up_filter(group: str) -> str:
    """Shared-subscription filter so that several hubs split the uplink load."""
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"a shared subscription group has no '/', '+' or '#': {group!r}")
    return f"$share/{group}/{UP_FILTER}"


def parse_topic(topic: str) -> tuple[DeviceId, str]:
    """Split a concrete topic into (device id, "up" | "down"); raise `TopicMismatch`."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != PREFIX or parts[3] not in ("up", "down"):
        raise TopicMismatch(f"not a Vigil v1 device topic: {topic!r}")
    try:
        device_id = DeviceId.parse(parts[2])
    except ValueError as exc:
        raise TopicMismatch(f"topic has no valid device id: {topic!r}") from exc
    return device_id, parts[3]
