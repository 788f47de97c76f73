"""Tell systemd how a Vigil daemon is doing (`Type=notify`, `WatchdogSec=`).

The sd_notify protocol is one datagram to `$NOTIFY_SOCKET`; outside systemd
the variable is unset and this does nothing. The socket is non-blocking: a
manager that stops reading must never stall the main loop it supervises.
"""

from __future__ import annotations

import logging
import os
import socket

_LOG = logging.getLogger(__name__)
_STATUS_MAX = 400  # one readable line in `systemctl status`


def sd_notify(state: str) -> bool:
    """Send `state` (READY=1, WATCHDOG=1, STOPPING=1) to systemd; return whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        _LOG.warning("sd_notify %s failed: %s", state.partition("=")[0], exc)
        return False
    return True


def sd_status(text: str) -> bool:
    """Show `text` as the unit's status line in `systemctl status` (e.g. the broker state).

    Control characters are replaced: a newline would start a new assignment, and a
    host name from a config file must never be able to send READY=1 or WATCHDOG=1.
    """
    return sd_notify(status_assignment(text))


def status_assignment(text: str) -> str:
    """`STATUS=text` as one safe assignment (see `sd_status`), for callers with their own
    notify function."""
    line = "".join(c if c.isprintable() else " " for c in text)[:_STATUS_MAX]
    return f"STATUS={line}"
