"""A broker the attacker runs: it records everything, and drops, delays, holds, replays,
reorders and injects by rule, on the test's driven clock.

It stands where mosquitto stands between the real device daemon and the real hub
service, behind the same small `Transport` protocol both already depend on, so the
code under attack is the production code. Routing is by topic, as MQTT does:
`.../up` goes to the hub, `.../down` to the device that owns the topic.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from vigil.wire.topics import parse_topic


class Verdict(Enum):
    FORWARD = "forward"
    DROP = "drop"
    HOLD = "hold"  # kept by the attacker, released (or not) later by the test


@dataclass(frozen=True, slots=True)
class Packet:
    n: int  # order of publication
    topic: str
    payload: bytes
    at: float  # driven-clock time of publication

    @property
    def direction(self) -> str:
        return parse_topic(self.topic)[1]

    @property
    def is_will(self) -> bool:
        return not self.payload


@dataclass(frozen=True, slots=True)
class Delay:
    seconds: float


Rule = Callable[[Packet], "Verdict | Delay | None"]  # None: no opinion, next rule decides
Deliver = Callable[[str, bytes], None]


@dataclass
class HostileBroker:
    """Route publications between endpoints through the attacker's rules."""

    clock: Callable[[], float]
    rules: list[Rule] = field(default_factory=list)
    published: list[Packet] = field(default_factory=list)  # everything anyone sent
    delivered: list[Packet] = field(default_factory=list)
    held: list[Packet] = field(default_factory=list)
    _subscribers: dict[str, list[Deliver]] = field(default_factory=dict)
    _delayed: list[tuple[float, int, Packet]] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    online: bool = True

    def subscribe(self, direction: str, deliver: Deliver) -> None:
        """`deliver(topic, payload)` gets every forwarded packet going `direction`."""
        self._subscribers.setdefault(direction, []).append(deliver)

    def transport(self) -> BrokerTransport:
        return BrokerTransport(self)

    # -- the attacker's hands ---------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> None:
        packet = Packet(next(self._counter), topic, payload, self.clock())
        self.published.append(packet)
        verdict = self._judge(packet)
        if verdict is Verdict.FORWARD:
            self._deliver(packet)
        elif verdict is Verdict.HOLD:
            self.held.append(packet)
        elif isinstance(verdict, Delay):
            heapq.heappush(self._delayed, (packet.at + verdict.seconds, packet.n, packet))

    def _judge(self, packet: Packet) -> Verdict | Delay:
        for rule in self.rules:
            verdict = rule(packet)
            if verdict is not None:
                return verdict
        return Verdict.FORWARD

    def _deliver(self, packet: Packet) -> None:
        self.delivered.append(packet)
        for deliver in self._subscribers.get(packet.direction, []):
            deliver(packet.topic, packet.payload)

    def pump(self) -> int:
        """Deliver every delayed packet now due; return how many."""
        count = 0
        while self._delayed and self._delayed[0][0] <= self.clock():
            _, _, packet = heapq.heappop(self._delayed)
            self._deliver(packet)
            count += 1
        return count

    def release(self, packets: list[Packet] | None = None) -> None:
        """Let held packets through (all of them by default), in the order given."""
        chosen = list(self.held) if packets is None else packets
        for packet in chosen:
            self.held.remove(packet)
            self._deliver(packet)

    def replay(self, packet: Packet, *, times: int = 1) -> None:
        """Deliver a recorded packet again, byte for byte."""
        for _ in range(times):
            self._deliver(packet)

    def inject(self, topic: str, payload: bytes) -> None:
        """Deliver bytes no endpoint published."""
        self._deliver(Packet(next(self._counter), topic, payload, self.clock()))

    def sent(self, direction: str) -> list[Packet]:
        return [p for p in self.published if p.direction == direction and not p.is_will]


@dataclass
class BrokerTransport:
    """What an endpoint holds: the `Transport` protocol, publishing into the broker."""

    broker: HostileBroker

    @property
    def connected(self) -> bool:
        return self.broker.online

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        from vigil.errors import TransportError  # noqa: PLC0415 - test helper, keep it local

        if not self.broker.online:
            raise TransportError("broker offline (adversary harness)")
        self.broker.publish(topic, payload)


# -- rules ----------------------------------------------------------------------------


def drop_all(direction: str) -> Rule:
    return lambda p: Verdict.DROP if p.direction == direction else None


def hold_all(direction: str) -> Rule:
    return lambda p: Verdict.HOLD if p.direction == direction else None


def only_sizes(direction: str, allowed: Callable[[Packet], bool]) -> Rule:
    """Forward `direction` packets that `allowed` picks, drop the rest (selective drop)."""
    return lambda p: (None if allowed(p) else Verdict.DROP) if p.direction == direction else None
