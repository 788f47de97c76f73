"""Payload encoding: canonical JSON out, strict decoding in, typed errors for anything else."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.parties import DIGEST, EPOCH, NONCE
from vigil.errors import MalformedMessage, UnknownKind
from vigil.wire import (
    AgedFix,
    Alarm,
    Cancel,
    Checkin,
    ClockSource,
    Direction,
    Fix,
    Heartbeat,
    Kind,
    Message,
    Position,
    Stored,
    Trigger,
)
from vigil.wire.messages import (
    DOWNLINK_KINDS,
    MAX_PENDING,
    UPLINK_KINDS,
    Mode,
    decode_payload,
    encode_payload,
)
from vigil.wire.rekey import KeyChunk

GOOD = Message(5, Alarm(Trigger.TAMPER, AgedFix(Fix(lat=1.0, lon=2.0, satellites=4), age=0.0), 9),
               1e9, ClockSource.GPS, epoch=EPOCH)  # fmt: skip


def doc() -> dict[str, object]:
    return dict(json.loads(encode_payload(GOOD)))


def test_encoding_is_canonical() -> None:
    text = encode_payload(GOOD).decode()
    assert text == json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)
    assert decode_payload(encode_payload(GOOD), Direction.UP) == GOOD


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: d.update(kind="launch"), UnknownKind),
        (lambda d: d.update(kind="stored"), UnknownKind),  # a downlink kind on the uplink
        (lambda d: d.update(kind=["alarm"]), UnknownKind),
        (lambda d: d.update(seq=-1), MalformedMessage),
        (lambda d: d.update(seq=2**63), MalformedMessage),
        (lambda d: d.update(seq=True), MalformedMessage),
        (lambda d: d.update(seq="5"), MalformedMessage),
        (lambda d: d.update(clock="sundial"), MalformedMessage),
        (lambda d: d.update(clock="unsynced"), MalformedMessage),  # time given but unsynced
        (lambda d: d.update(extra=1), MalformedMessage),
        (lambda d: d.pop("body"), MalformedMessage),
        (lambda d: d.update(body=[]), MalformedMessage),
        (lambda d: d["body"].update(trigger="panic"), MalformedMessage),  # type: ignore[attr-defined]
        (lambda d: d["body"].update(trigger={}), MalformedMessage),  # type: ignore[attr-defined]
        (lambda d: d["body"].update(battery=101), MalformedMessage),  # type: ignore[attr-defined]
        (lambda d: d["body"].update(fix="here"), MalformedMessage),  # type: ignore[attr-defined]
        (lambda d: d["body"]["fix"].update(lat=91), MalformedMessage),  # type: ignore[index]
        (lambda d: d["body"]["fix"].update(lon=-180.5), MalformedMessage),  # type: ignore[index]
        (lambda d: d["body"]["fix"].update(satellites=1.5), MalformedMessage),  # type: ignore[index]
        (lambda d: d["body"]["fix"].pop("age"), MalformedMessage),  # type: ignore[index]
        (lambda d: d.pop("epoch"), MalformedMessage),
        (lambda d: d.pop("nonce"), MalformedMessage),
        (lambda d: d.update(epoch=None), MalformedMessage),
        (lambda d: d.update(epoch="00112233445566"), MalformedMessage),  # 7 bytes
        (lambda d: d.update(epoch="00112233445566AA"), MalformedMessage),  # not lowercase
        (lambda d: d.update(epoch="001122334455667g"), MalformedMessage),
        (lambda d: d.update(epoch=1234567890123456), MalformedMessage),
        (lambda d: d.update(nonce="0e" * 15), MalformedMessage),
        (lambda d: d.update(nonce="0E" * 16), MalformedMessage),
        (lambda d: d.update(nonce=["0e" * 16]), MalformedMessage),
    ],
)
def test_hostile_fields_are_refused(mutate: object, error: type[Exception]) -> None:
    d = doc()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(error):
        decode_payload(json.dumps(d).encode(), Direction.UP)


HEARTBEAT = Message(6, Heartbeat(50, None, 70, Mode.ACTIVE, 2, 3), 1e9, ClockSource.NTP,
                    epoch=EPOCH, nonce=NONCE)  # fmt: skip
RECEIPT = Message(2, Stored(3, DIGEST), 1e9, ClockSource.NTP, epoch=EPOCH, nonce=NONCE)


@pytest.mark.parametrize(
    ("message", "direction", "mutate"),
    [
        (HEARTBEAT, Direction.UP, lambda b: b.update(mode="panicking")),
        (HEARTBEAT, Direction.UP, lambda b: b.update(mode=None)),
        (HEARTBEAT, Direction.UP, lambda b: b.update(pending=0)),  # but an oldest seq given
        (HEARTBEAT, Direction.UP, lambda b: b.update(oldest_pending=None)),  # but 2 pending
        (HEARTBEAT, Direction.UP, lambda b: b.update(pending=MAX_PENDING + 1)),
        (HEARTBEAT, Direction.UP, lambda b: b.update(pending=True)),
        (HEARTBEAT, Direction.UP, lambda b: b.update(oldest_pending=-1)),
        (HEARTBEAT, Direction.UP, lambda b: b.update(fix=12.5)),  # version 1's fix_age
        (HEARTBEAT, Direction.UP, lambda b: b.update(fix_age=12.5)),
        (RECEIPT, Direction.DOWN, lambda b: b.pop("digest")),
        (RECEIPT, Direction.DOWN, lambda b: b.update(digest="d1" * 15)),
        (RECEIPT, Direction.DOWN, lambda b: b.update(digest="D1" * 16)),
        (RECEIPT, Direction.DOWN, lambda b: b.update(digest=None)),
    ],
)
def test_hostile_version_2_bodies_are_refused(
    message: Message, direction: Direction, mutate: object
) -> None:
    d = json.loads(encode_payload(message))
    assert decode_payload(json.dumps(d).encode(), direction) == message  # the unspoiled one
    mutate(d["body"])  # type: ignore[operator]
    with pytest.raises(MalformedMessage):
        decode_payload(json.dumps(d).encode(), direction)


def test_a_downlink_always_carries_a_nonce() -> None:
    d = json.loads(encode_payload(RECEIPT))
    d["nonce"] = None
    with pytest.raises(MalformedMessage, match="nonce"):
        decode_payload(json.dumps(d).encode(), Direction.DOWN)
    with pytest.raises(MalformedMessage, match="nonce"):
        Message(2, Stored(3, DIGEST), epoch=EPOCH)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe", b"null", b"[]", b"{", b'{"kind":NaN}', b"1e999", b"[" * 100_000],
)
def test_garbage_payloads_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_payload(raw, Direction.UP)


def test_non_finite_numbers_are_refused() -> None:
    text = encode_payload(Message(1, Heartbeat(), 1.0, ClockSource.NTP, epoch=EPOCH)).replace(
        b"1.0", b"Infinity"
    )
    with pytest.raises(MalformedMessage):
        decode_payload(text, Direction.UP)


def test_downlink_kinds_decode_only_on_the_downlink() -> None:
    payload = encode_payload(Message(1, Stored(3, DIGEST), epoch=EPOCH, nonce=NONCE))
    assert decode_payload(payload, Direction.DOWN).body == Stored(3, DIGEST)
    with pytest.raises(UnknownKind):
        decode_payload(payload, Direction.UP)


def test_values_are_validated_where_they_are_made() -> None:
    with pytest.raises(MalformedMessage):
        Fix(lat=float("nan"), lon=0, fix_time=None, quality=1, satellites=1, hdop=None)
    with pytest.raises(MalformedMessage):
        AgedFix(Fix(lat=1.0, lon=2.0), age=-1.0)
    with pytest.raises(MalformedMessage):
        Cancel(alarm_seq=1, duress=1)  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage):
        Message(
            1, Stored(1, DIGEST), sent_at=None, clock=ClockSource.NTP, epoch=EPOCH, nonce=NONCE
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, direction=st.sampled_from(Direction))
def test_any_json_decodes_or_raises_malformed(value: object, direction: Direction) -> None:
    with contextlib.suppress(MalformedMessage):
        decode_payload(json.dumps(value).encode(), direction)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["trigger", "fix", "battery", "x"]), json_values))
def test_any_alarm_body_decodes_or_raises_malformed(body: dict[str, object]) -> None:
    d = doc()
    d["body"] = body
    with contextlib.suppress(MalformedMessage):
        decode_payload(json.dumps(d).encode(), Direction.UP)


# Bytes of protocol version 2 written from docs/protocol.md §4 by hand, not by the
# encoder: the wire format is the spec, not the Python types behind it.
TAMPER_FIX = Fix(lat=1.0, lon=2.5, fix_time=1764000000.0, quality=2, satellites=4, hdop=0.9)
GOLDEN = [
    (
        Message(
            5,
            Alarm(Trigger.TAMPER, AgedFix(TAMPER_FIX, age=3.5), 9),
            1e9,
            ClockSource.GPS,
            epoch=EPOCH,
        ),
        Direction.UP,
        b'{"body":{"battery":9,"fix":{"age":3.5,"fix_time":1764000000.0,"hdop":0.9,"lat":1.0,'
        b'"lon":2.5,"quality":2,"satellites":4},"trigger":"tamper"},"clock":"gps",'
        b'"epoch":"0011223344556677","kind":"alarm","nonce":null,"sent_at":1000000000.0,'
        b'"seq":5}',
    ),
    (
        Message(
            7, Position(3, AgedFix(Fix(lat=-1.0, lon=-2.5), age=0.0)), epoch=EPOCH, nonce=NONCE
        ),
        Direction.UP,
        b'{"body":{"alarm_seq":3,"fix":{"age":0.0,"fix_time":null,"hdop":null,"lat":-1.0,'
        b'"lon":-2.5,"quality":1,"satellites":0}},"clock":"unsynced",'
        b'"epoch":"0011223344556677","kind":"position",'
        b'"nonce":"0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e","sent_at":null,"seq":7}',
    ),
    (
        Message(
            8,
            Heartbeat(40, None, 90, Mode.SILENT, 2, 5),
            1e9,
            ClockSource.NTP,
            epoch=EPOCH,
            nonce=NONCE,
        ),
        Direction.UP,
        b'{"body":{"battery":40,"fix":null,"mode":"silent","oldest_pending":5,"pending":2,'
        b'"rekey":null,"signal":90},"clock":"ntp","epoch":"0011223344556677",'
        b'"kind":"heartbeat","nonce":"0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e",'
        b'"sent_at":1000000000.0,"seq":8}',
    ),
    (
        Message(9, Heartbeat(rekey=KeyChunk("00112233445566ff", 40, 44, "Zm9v")), epoch=EPOCH),
        Direction.UP,
        b'{"body":{"battery":null,"fix":null,"mode":"idle","oldest_pending":null,"pending":0,'
        b'"rekey":"00112233445566ff:40:44:Zm9v","signal":null},"clock":"unsynced",'
        b'"epoch":"0011223344556677","kind":"heartbeat","nonce":null,"sent_at":null,"seq":9}',
    ),
    (
        Message(2, Stored(5, DIGEST), 1e9, ClockSource.NTP, epoch=EPOCH, nonce=NONCE),
        Direction.DOWN,
        b'{"body":{"digest":"d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1","seq":5},"clock":"ntp",'
        b'"epoch":"0011223344556677","kind":"stored",'
        b'"nonce":"0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e","sent_at":1000000000.0,"seq":2}',
    ),
]


@pytest.mark.parametrize(
    ("message", "direction", "payload"),
    GOLDEN,
    ids=["alarm", "position", "heartbeat", "heartbeat-rekey", "stored"],
)
def test_payload_bytes_are_unchanged(
    message: Message, direction: Direction, payload: bytes
) -> None:
    assert encode_payload(message) == payload
    assert decode_payload(payload, direction) == message


def test_every_body_has_one_kind_and_the_wire_carries_its_string() -> None:
    bodies = {**UPLINK_KINDS, **DOWNLINK_KINDS}
    assert set(bodies) == set(Kind)
    for kind, cls in bodies.items():
        assert cls.KIND is kind
    decoded = decode_payload(encode_payload(Message(1, Checkin(), epoch=EPOCH)), Direction.UP)
    assert decoded.kind is Kind.CHECKIN
    assert json.loads(encode_payload(Message(1, Checkin(), epoch=EPOCH)))["kind"] == "checkin"


@pytest.mark.parametrize(
    "bad",
    [
        {"lat": 90.000001},
        {"lat": -90.5},
        {"lon": 180.01},
        {"lon": float("inf")},
        {"lat": True},
        {"lat": "52.5"},
        {"quality": 10},
        {"quality": 1.0},
        {"satellites": -1},
        {"satellites": 100},
        {"hdop": 100.0},
        {"hdop": float("nan")},
        {"fix_time": -1.0},
        {"fix_time": 1e12},
    ],
    ids=repr,
)
def test_a_fix_refuses_values_out_of_range(bad: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage, match=next(iter(bad))):
        Fix(**{"lat": 52.5, "lon": 13.4, **bad})  # type: ignore[arg-type]


def test_a_fix_is_frozen() -> None:
    fix = Fix(lat=52.5, lon=13.4)
    with pytest.raises(AttributeError):
        fix.lat = 0.0  # type: ignore[misc]
