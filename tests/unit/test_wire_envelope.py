"""The envelope: round trips, fixed sizes, and every way a message must be refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.parties import DIGEST, EPOCH, NONCE, Parties, parties
from vigil.errors import (
    BadSignature,
    DecryptionFailed,
    MalformedEnvelope,
    MessageTooLarge,
    OversizedEnvelope,
    ReplayedMessage,
    TopicMismatch,
    TruncatedEnvelope,
    UnknownDevice,
    UnknownSuite,
    UnsupportedVersion,
    VigilError,
    WrongDirection,
)
from vigil.wire import (
    BUCKETS,
    Acknowledged,
    AgedFix,
    Alarm,
    Cancel,
    Checkin,
    ClockSource,
    Config,
    DeviceId,
    DeviceKeys,
    Fix,
    Heartbeat,
    HubKeys,
    Message,
    Position,
    ReplayWindow,
    Resolved,
    Stored,
    Suite,
    Trigger,
    envelope_size,
    open_downlink,
    open_uplink,
    seal_downlink,
    seal_uplink,
)
from vigil.wire.envelope import HEADER_BYTES, MAX_ENVELOPE, VERSION, seal_payload
from vigil.wire.liveness import EPOCH_BYTES, NONCE_BYTES, Epoch
from vigil.wire.messages import MAX_PENDING, Direction, Mode, encode_payload
from vigil.wire.replay import MAX_SEQ

P = parties()
FIX = AgedFix(Fix(lat=-33.8688197, lon=151.2092955, fix_time=1764000000.0, quality=1,
                  satellites=9, hdop=0.8), age=4.5)  # fmt: skip
WIDE_FIX = AgedFix(Fix(lat=-89.12345678901234, lon=-179.12345678901234,
                       fix_time=7_000_000_000.123456, quality=9, satellites=99, hdop=99.99),
                   age=315_000_000.123456)  # fmt: skip
UPLINK_BODIES = [
    Alarm(Trigger.BUTTON, FIX, 87),
    Alarm(Trigger.TAMPER, None, None),
    Alarm(Trigger.MISSED_CHECKIN, WIDE_FIX, 100),
    Alarm(Trigger.DURESS, WIDE_FIX, 0),
    Cancel(alarm_seq=41, duress=False),
    Cancel(alarm_seq=41, duress=True),
    Position(alarm_seq=MAX_SEQ, fix=WIDE_FIX),
    Heartbeat(battery=55, fix=FIX, signal=70),
    Heartbeat(100, WIDE_FIX, 100, Mode.SILENT, pending=4095, oldest_pending=MAX_SEQ),
    Heartbeat(),
    Checkin(),
]
DOWNLINK_BODIES = [
    Stored(seq=41, digest=DIGEST),
    Acknowledged(alarm_seq=41, digest=DIGEST),
    Resolved(alarm_seq=41, digest=DIGEST),
    Config({"heartbeat_interval": 120, "checkin": True, "label": "x", "ratio": 0.5}),
]


def up(body: object, *, seq: int = 41, suite: Suite = Suite.X25519_CHACHA20, p: Parties = P,
       device_id: DeviceId | None = None, epoch: Epoch = EPOCH,
       nonce: str | None = NONCE) -> bytes:  # fmt: skip
    """An uplink echoing a nonce by default: the largest form every kind must fit in."""
    message = Message(seq, body, sent_at=1764000000.5, clock=ClockSource.NTP, epoch=epoch,  # type: ignore[arg-type]
                      nonce=nonce)  # fmt: skip
    return seal_uplink(
        message, device_id=device_id or p.device_id, device_keys=p.device, hub=p.hub.public(),
        suite=suite,
    )  # fmt: skip


def open_up(
    data: bytes, *, device_id: DeviceId | None = None, hub: HubKeys | None = None
) -> Message:
    return open_uplink(
        data, device_id=device_id or P.device_id, hub_keys=hub or P.hub, lookup=P.lookup
    )


def down(body: object, seq: int = 3) -> bytes:
    message = Message(seq, body, epoch=EPOCH, nonce=NONCE)  # type: ignore[arg-type]
    return seal_downlink(message, device_id=P.device_id, hub_keys=P.hub, device=P.device.public())


def open_down(data: bytes, *, keys: DeviceKeys | None = None) -> Message:
    return open_downlink(
        data, device_id=P.device_id, device_keys=keys or P.device, hub=P.hub.public()
    )


# -- round trips and sizes -----------------------------------------------------------------


@pytest.mark.parametrize("suite", list(Suite), ids=lambda s: s.name)
@pytest.mark.parametrize("body", UPLINK_BODIES, ids=lambda b: type(b).__name__)
def test_uplink_round_trip_and_fixed_size(body: object, suite: Suite) -> None:
    data = up(body, suite=suite)
    assert len(data) == envelope_size(suite)
    message = open_up(data)
    assert message.body == body
    assert (message.seq, message.sent_at, message.clock) == (41, 1764000000.5, ClockSource.NTP)
    assert (message.epoch, message.nonce) == (EPOCH, NONCE)


@pytest.mark.parametrize("body", DOWNLINK_BODIES, ids=lambda b: type(b).__name__)
def test_downlink_round_trip(body: object) -> None:
    data = down(body)
    assert len(data) == envelope_size(Suite.X25519_CHACHA20)
    message = open_down(data)
    assert (message.body, message.epoch, message.nonce) == (body, EPOCH, NONCE)


@pytest.mark.parametrize("body", DOWNLINK_BODIES[:1], ids=lambda b: type(b).__name__)
def test_a_device_with_a_hybrid_key_gets_hybrid_downlinks(body: object) -> None:
    hybrid = DeviceKeys.generate(hybrid=True)
    message = Message(3, body, epoch=EPOCH, nonce=NONCE)  # type: ignore[arg-type]
    data = seal_downlink(message, device_id=P.device_id, hub_keys=P.hub, device=hybrid.public())
    assert len(data) == envelope_size(Suite.MLKEM768_X25519_CHACHA20) == 1668
    assert data[1] == Suite.MLKEM768_X25519_CHACHA20  # the header's suite byte says so
    assert open_down(data, keys=hybrid).body == body
    classic = DeviceKeys(hybrid.signing, hybrid.kem)  # the same device without its hybrid key
    with pytest.raises(UnknownSuite):
        open_down(data, keys=classic)


def test_sizes_are_the_documented_ones() -> None:
    assert envelope_size(Suite.X25519_CHACHA20) == 580
    assert envelope_size(Suite.MLKEM768_X25519_CHACHA20) == 1668
    assert envelope_size(Suite.X25519_CHACHA20, BUCKETS[1]) == 2116


def test_duress_cancel_is_indistinguishable_by_size() -> None:
    real, duress = up(Cancel(7, duress=False)), up(Cancel(7, duress=True))
    assert len(real) == len(duress)
    assert real[:HEADER_BYTES] == duress[:HEADER_BYTES]


def test_oversized_config_is_refused_when_sealing() -> None:
    settings_ = {f"k{i:02}": "x" * 64 for i in range(32)}
    with pytest.raises(MessageTooLarge):
        down(Config(settings_))


# -- every way a message must be refused ------------------------------------------------------


def test_every_flipped_byte_is_rejected() -> None:
    data = up(Alarm(Trigger.BUTTON, FIX, 50))
    for position in range(len(data)):
        forged = bytearray(data)
        forged[position] ^= 0x01
        with pytest.raises(VigilError):
            open_up(bytes(forged))


def test_wrong_hub_key_fails_decryption() -> None:
    with pytest.raises(DecryptionFailed):
        open_up(up(Checkin()), hub=HubKeys.generate())


def test_wrong_device_key_fails_signature() -> None:
    """A message signed by another enrolled device's key, claiming to be ours."""
    impostor = Parties(P.hub, P.device_id, P.other, P.other_id, P.other)
    with pytest.raises(BadSignature):
        open_up(up(Alarm(Trigger.BUTTON), p=impostor))


def test_message_moved_to_another_topic_is_rejected() -> None:
    with pytest.raises(TopicMismatch):
        open_up(up(Checkin()), device_id=P.other_id)


def test_header_rewritten_to_match_the_new_topic_fails_decryption() -> None:
    data = bytearray(up(Checkin()))
    data[4:HEADER_BYTES] = P.other_id.raw
    with pytest.raises(DecryptionFailed):
        open_up(bytes(data), device_id=P.other_id)


def test_unknown_device_is_rejected() -> None:
    stranger = DeviceId.generate()
    with pytest.raises(UnknownDevice):
        open_up(up(Checkin(), device_id=stranger), device_id=stranger)


def test_replay_is_rejected_by_the_window() -> None:
    data = up(Checkin(), seq=9)
    window = ReplayWindow().admit(open_up(data).seq)
    with pytest.raises(ReplayedMessage):
        window.admit(open_up(data).seq)


def test_downlink_replayed_as_uplink_is_rejected() -> None:
    with pytest.raises(WrongDirection):
        open_up(down(Stored(1, DIGEST)))


def test_downlink_from_anyone_but_the_hub_is_rejected() -> None:
    forged = seal_downlink(
        Message(1, Acknowledged(41, DIGEST), epoch=EPOCH, nonce=NONCE),
        device_id=P.device_id, hub_keys=HubKeys.generate(), device=P.device.public(),
    )  # fmt: skip
    with pytest.raises(BadSignature):
        open_down(forged)


def test_downlink_for_another_device_does_not_open() -> None:
    with pytest.raises(DecryptionFailed):
        open_down(down(Resolved(41, DIGEST)), keys=DeviceKeys.generate())


@pytest.mark.parametrize("cut", [0, 1, 19, 20, 100, 579])
def test_truncated_envelope_is_rejected(cut: int) -> None:
    with pytest.raises(TruncatedEnvelope):
        open_up(up(Checkin())[:cut])


def test_oversized_envelope_is_rejected() -> None:
    with pytest.raises(OversizedEnvelope):
        open_up(up(Checkin()) + bytes(MAX_ENVELOPE))


def test_extended_envelope_is_rejected() -> None:
    with pytest.raises(MalformedEnvelope):
        open_up(up(Checkin()) + b"\x00")


@pytest.mark.parametrize("version", [1, 3, 255])
def test_wrong_version_is_rejected(version: int) -> None:
    """Version 1 too: its envelopes are bound to other labels and lack epoch and nonce."""
    with pytest.raises(UnsupportedVersion):
        open_up(bytes([version]) + up(Checkin())[1:])


def test_uplink_in_the_larger_bucket_is_rejected_before_decryption() -> None:
    """A big uplink would mark itself on the wire: the hub refuses it unopened (§5)."""
    payload = encode_payload(Message(41, Checkin(), epoch=EPOCH, nonce=NONCE))
    padded = payload[:-1] + b" " * (BUCKETS[0]) + b"}"  # same JSON, too long for 512
    big = seal_payload(padded, Direction.UP, device_id=P.device_id, signer=P.device.signing,
                       recipient=P.hub.public().kem)  # fmt: skip
    assert len(big) == envelope_size(Suite.X25519_CHACHA20, BUCKETS[1])
    with pytest.raises(MalformedEnvelope, match="uplinks are 580 bytes"):
        open_up(big)


def test_unknown_suite_is_rejected() -> None:
    data = up(Checkin())
    with pytest.raises(UnknownSuite):
        open_up(data[:1] + b"\x09" + data[2:])


# -- properties -------------------------------------------------------------------------------

fixes = st.builds(
    AgedFix,
    st.builds(
        Fix,
        lat=st.floats(-90, 90),
        lon=st.floats(-180, 180),
        fix_time=st.none() | st.floats(0, 7_258_118_400),
        quality=st.integers(0, 9),
        satellites=st.integers(0, 99),
        hdop=st.none() | st.floats(0, 99.99),
    ),
    age=st.floats(0, 315_360_000),
)
seqs = st.integers(0, MAX_SEQ)
epochs = st.binary(min_size=EPOCH_BYTES, max_size=EPOCH_BYTES).map(Epoch)
nonces = st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES).map(bytes.hex)
uplink_bodies = st.one_of(
    st.builds(Alarm, st.sampled_from(Trigger), st.none() | fixes, st.none() | st.integers(0, 100)),
    st.builds(Cancel, seqs, st.booleans()),
    st.builds(Position, seqs, fixes),
    st.builds(
        Heartbeat,
        st.none() | st.integers(0, 100),
        st.none() | fixes,
        st.none() | st.integers(0, 100),
        st.sampled_from(Mode),
    ),
    st.builds(
        Heartbeat,
        st.none() | st.integers(0, 100),
        st.none() | fixes,
        st.none() | st.integers(0, 100),
        st.sampled_from(Mode),
        pending=st.integers(1, MAX_PENDING),
        oldest_pending=seqs,
    ),
    st.just(Checkin()),
)


@settings(max_examples=150, deadline=None)
@given(body=uplink_bodies, seq=seqs, epoch=epochs, nonce=st.none() | nonces)
def test_any_uplink_round_trips_at_the_one_uplink_size(
    body: object, seq: int, epoch: Epoch, nonce: str | None
) -> None:
    data = up(body, seq=seq, epoch=epoch, nonce=nonce)
    assert len(data) == envelope_size(Suite.X25519_CHACHA20)
    message = open_up(data)
    assert message.body == body
    assert (message.seq, message.epoch, message.nonce) == (seq, epoch, nonce)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=5000))
def test_arbitrary_bytes_raise_only_our_errors(data: bytes) -> None:
    with pytest.raises(VigilError):
        open_up(data)


@settings(max_examples=150, deadline=None)
@given(prefix=st.binary(min_size=HEADER_BYTES, max_size=HEADER_BYTES), tail=st.binary())
def test_arbitrary_bytes_behind_a_valid_header_raise_only_our_errors(
    prefix: bytes, tail: bytes
) -> None:
    header = bytes([VERSION, 1, 1, 0]) + P.device_id.raw
    body = (header + tail)[: envelope_size(Suite.X25519_CHACHA20)]
    body = body + bytes(envelope_size(Suite.X25519_CHACHA20) - len(body))
    with pytest.raises(VigilError):
        open_up(body)
    with pytest.raises(VigilError):
        open_up(prefix + tail)
