"""Random drop / delay / hold / replay schedules against the invariant (docs/protocol.md §10)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.adversary.hostile_broker import Delay, HostileBroker, Packet, Verdict
from tests.adversary.rig import HEARTBEAT, HUB_TICK, SILENT_AFTER, Clock, rig
from vigil.device.core import Pattern
from vigil.hub.store import AlertKind

SEEN_OR_SUSPECTED = (AlertKind.ALARM, AlertKind.WITHHELD, AlertKind.SILENT, AlertKind.CONFLICT)


class RandomAttacker:
    """Decides each packet's fate from its own seeded draw: reproducible, shrinkable."""

    def __init__(
        self, seed: int, *, drop: float, delay: float, hold: float, replay: float
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a schedule, not cryptography
        self.drop, self.delay, self.hold, self.replay = drop, delay, hold, replay
        self.broker: HostileBroker | None = None

    def __call__(self, packet: Packet) -> Verdict | Delay | None:
        draw = self.rng.random()
        if self.broker is not None and self.rng.random() < self.replay and self.broker.published:
            self.broker.replay(self.rng.choice(self.broker.published))
        if draw < self.drop:
            return Verdict.DROP
        if draw < self.drop + self.hold:
            return Verdict.HOLD
        if draw < self.drop + self.hold + self.delay:
            return Delay(self.rng.uniform(0, 3 * HEARTBEAT))
        return None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    seed=st.integers(0, 2**32),
    drop=st.floats(0, 1),
    delay=st.floats(0, 0.5),
    hold=st.floats(0, 0.3),
    replay=st.floats(0, 0.3),
    hold_at=st.floats(1, 2 * HEARTBEAT),
)
@example(seed=1, drop=1.0, delay=0, hold=0, replay=0, hold_at=10)  # nothing gets through
@example(seed=2, drop=0.0, delay=0, hold=1.0, replay=0, hold_at=10)  # everything is stashed
@example(seed=3, drop=0.0, delay=1.0, hold=0, replay=0.3, hold_at=10)  # late and repeated
def test_whatever_the_broker_does_the_alarm_is_seen_or_suspected(  # noqa: PLR0917
    seed: int, drop: float, delay: float, hold: float, replay: float, hold_at: float
) -> None:
    attacker = RandomAttacker(seed, drop=drop, delay=delay, hold=hold, replay=replay)
    clock = Clock()
    broker = HostileBroker(clock, rules=[attacker])
    attacker.broker = broker
    with tempfile.TemporaryDirectory() as tmp, rig(Path(tmp), broker=broker) as r:
        r.advance(hold_at)
        r.hold()
        r.advance(SILENT_AFTER + 1.25 * HEARTBEAT + HUB_TICK)
        kinds = {a.kind for a in r.alerts()}
        assert kinds & set(SEEN_OR_SUSPECTED), f"nothing seen nor suspected: {kinds}"
        if Pattern.STORED in r.wearer.felt:
            assert AlertKind.ALARM in kinds, "the wearer felt 'stored' for an alarm nobody has"
