"""Replay window: decide whether a (device, seq) is new, a duplicate, or too old.

A sliding bitmap as in IPsec (RFC 4303 §3.4.3), but wide: the device may hold
many messages in its outbox and sends alarms before older heartbeats, so seqs
arrive out of order. The window must be wider than the device's outbox.

Pure and immutable: the hub persists `highest` and `mask` per device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vigil.errors import ReplayedMessage

WINDOW_SIZE = 4096
MAX_SEQ = 2**63 - 1


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    TOO_OLD = "too-old"


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """Seqs accepted so far: bit i of `mask` set means `highest - i` was accepted.

    >>> w = ReplayWindow().accept(5)
    >>> w.check(5), w.check(4)
    (<Verdict.DUPLICATE: 'duplicate'>, <Verdict.ACCEPT: 'accept'>)
    """

    highest: int = -1
    mask: int = 0
    size: int = WINDOW_SIZE

    def check(self, seq: int) -> Verdict:
        """Say what to do with `seq`, without changing the window."""
        if seq < 0 or seq > MAX_SEQ:
            return Verdict.TOO_OLD
        if seq > self.highest:
            return Verdict.ACCEPT
        offset = self.highest - seq
        if offset >= self.size:
            return Verdict.TOO_OLD
        return Verdict.DUPLICATE if self.mask >> offset & 1 else Verdict.ACCEPT

    def accept(self, seq: int) -> ReplayWindow:
        """Return the window with `seq` recorded; call only after `check` said ACCEPT."""
        if self.check(seq) is not Verdict.ACCEPT:
            raise ValueError(f"seq {seq} is not acceptable: {self.check(seq).value}")
        full = (1 << self.size) - 1
        if seq > self.highest:
            shift = seq - self.highest
            mask = ((self.mask << shift) | 1) & full if shift < self.size else 1
            return ReplayWindow(seq, mask, self.size)
        return ReplayWindow(self.highest, self.mask | 1 << (self.highest - seq), self.size)

    def admit(self, seq: int) -> ReplayWindow:
        """Return the window with `seq` recorded, or raise `ReplayedMessage`."""
        verdict = self.check(seq)
        if verdict is not Verdict.ACCEPT:
            raise ReplayedMessage(f"seq {seq} rejected: {verdict.value}")
        return self.accept(seq)
