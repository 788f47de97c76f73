"""Payload encoding: canonical JSON out, strict decoding in, typed errors for anything else."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.errors import MalformedMessage, UnknownKind
from vigil.wire import (
    Alarm,
    Cancel,
    ClockSource,
    Direction,
    Fix,
    Heartbeat,
    Message,
    Stored,
    Trigger,
)
from vigil.wire.messages import decode_payload, encode_payload

GOOD = Message(5, Alarm(Trigger.TAMPER, Fix(1.0, 2.0, None, 1, 4, None, 0.0), 9), 1e9,
               ClockSource.GPS)  # fmt: skip


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
    ],
)
def test_hostile_fields_are_refused(mutate: object, error: type[Exception]) -> None:
    d = doc()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(error):
        decode_payload(json.dumps(d).encode(), Direction.UP)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe", b"null", b"[]", b"{", b'{"kind":NaN}', b"1e999", b"[" * 100_000],
)
def test_garbage_payloads_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_payload(raw, Direction.UP)


def test_non_finite_numbers_are_refused() -> None:
    text = encode_payload(Message(1, Heartbeat(fix_age=1.0))).replace(b"1.0", b"Infinity")
    with pytest.raises(MalformedMessage):
        decode_payload(text, Direction.UP)


def test_downlink_kinds_decode_only_on_the_downlink() -> None:
    payload = encode_payload(Message(1, Stored(3)))
    assert decode_payload(payload, Direction.DOWN).body == Stored(3)
    with pytest.raises(UnknownKind):
        decode_payload(payload, Direction.UP)


def test_values_are_validated_where_they_are_made() -> None:
    with pytest.raises(MalformedMessage):
        Fix(lat=float("nan"), lon=0, fix_time=None, quality=1, satellites=1, hdop=None, age=0)
    with pytest.raises(MalformedMessage):
        Cancel(alarm_seq=1, duress=1)  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage):
        Message(1, Stored(1), sent_at=None, clock=ClockSource.NTP)


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
