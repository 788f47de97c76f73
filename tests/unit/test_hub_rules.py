"""Pure hub rules: alert lifecycle, escalation policy, watchdog, audit chain, notice text."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.parties import EPOCH, parties
from vigil.errors import BadTransition
from vigil.hub import alerts, audit, escalation, watchdog
from vigil.hub.channels import compose
from vigil.hub.config import Channel, Recipient, Tier
from vigil.hub.health import Heartbeats, WorkerBounds, describe_stuck
from vigil.hub.store.records import Alert, AlertKind, AlertState, AuditEntry, DeviceRecord, LastFix
from vigil.wire import AgedFix, Alarm, Fix, Trigger

NOW = 1_764_000_000.0
FIX = AgedFix(
    Fix(lat=17.0654, lon=-96.7237, fix_time=None, quality=1, satellites=7, hdop=0.9), age=30.0
)
TIERS = (
    Tier("operators", 0, ("ops",)),
    Tier("partners", 120, ("partners",)),
    Tier("nearby", 300, ("nearby",), radius_km=5),
)
CHANNELS = {
    "ops": Channel("ops", (Recipient("Op", "mailto://ops@x"),)),
    "partners": Channel("partners", (Recipient("P", "json://p"), Recipient("P2", "json://p"))),
    "nearby": Channel(
        "nearby",
        (
            Recipient("Near", "json://near", lat=17.07, lon=-96.72),  # ~0.6 km
            Recipient("Far", "json://far", lat=19.43, lon=-99.13),  # Mexico City
            Recipient("Nowhere", "json://nowhere"),
        ),
    ),
    "public": Channel("public", (Recipient("Press", "json://press"),), public=True),
}


def device() -> DeviceRecord:
    p = parties()
    return DeviceRecord(p.device_id, "Ana (Oaxaca)", p.device.public(), contacts=("json://mum",),
                        battery=61)  # fmt: skip


def alarm(trigger: Trigger = Trigger.BUTTON, fix: AgedFix | None = FIX) -> Alert:
    a = alerts.from_alarm(
        parties().device_id, EPOCH.hex, 7, Alarm(trigger, fix=fix, battery=80), received_at=NOW
    )
    return replace(a, id=1)


# -- lifecycle ------------------------------------------------------------------------------


def test_alarm_opens_with_position_on_hub_clock() -> None:
    a = alarm()
    assert (a.state, a.kind, a.alarm_epoch, a.alarm_seq, a.trigger, a.battery) == (
        AlertState.OPEN, AlertKind.ALARM, EPOCH.hex, 7, "button", 80)  # fmt: skip
    assert a.last_fix == LastFix(17.0654, -96.7237, taken_at=NOW - 30, received_at=NOW)


def test_full_lifecycle() -> None:
    a = alerts.acknowledge(alarm(), by="rosa", now=NOW + 10)
    assert (a.state, a.acknowledged_by, a.acknowledged_at) == (
        AlertState.ACKNOWLEDGED,
        "rosa",
        NOW + 10,
    )
    with pytest.raises(BadTransition):
        alerts.acknowledge(a, by="again", now=NOW + 11)
    v = alerts.verify(a, by="rosa", now=NOW + 20)
    assert alerts.may_broadcast(v)
    done = alerts.close(v, false_alarm=False, now=NOW + 30, note="safe")
    assert (done.state, done.closed_at, done.note) == (AlertState.RESOLVED, NOW + 30, "safe")
    assert not alerts.may_broadcast(done)
    with pytest.raises(BadTransition):
        alerts.close(done, false_alarm=True, now=NOW + 40)


def test_verify_needs_acknowledgement_first() -> None:
    with pytest.raises(BadTransition):
        alerts.verify(alarm(), by="x", now=NOW)
    assert not alerts.may_broadcast(alarm())


def test_cancel_and_duress_cancel() -> None:
    cancelled = alerts.cancel(alarm(), duress=False, now=NOW + 5)
    assert cancelled.state is AlertState.CANCELLED
    assert alerts.cancel(cancelled, duress=True, now=NOW + 6) == cancelled  # late: no change
    duress = alerts.cancel(alarm(), duress=True, now=NOW + 5)
    assert duress.state is AlertState.OPEN
    assert duress.duress
    assert alerts.operator_view(duress) == "DURESS"
    assert alerts.device_view(duress) == "cancelled"
    assert alerts.device_view(alarm(Trigger.DURESS)) == "open"


def test_newest_position_wins() -> None:
    a = alarm()
    older = LastFix(1, 1, taken_at=NOW - 100, received_at=NOW + 1)
    newer = LastFix(2, 2, taken_at=NOW + 5, received_at=NOW + 6)
    assert alerts.attach_position(a, older, now=NOW + 1) == a
    assert alerts.attach_position(a, newer, now=NOW + 6).last_fix == newer


# -- escalation ------------------------------------------------------------------------------


def names(tiers: list[Tier]) -> list[str]:
    return [t.name for t in tiers]


def test_tiers_fall_due_on_schedule_once() -> None:
    a = alarm()
    assert names(escalation.due_tiers(a, TIERS, set(), now=NOW)) == ["operators"]
    assert names(escalation.due_tiers(a, TIERS, {"operators"}, now=NOW + 119)) == []
    assert names(escalation.due_tiers(a, TIERS, {"operators"}, now=NOW + 120)) == ["partners"]
    assert escalation.next_due(a, TIERS, {"operators"}) == NOW + 120


def test_next_due_never_waits_for_a_tier_that_cannot_fire() -> None:
    silent = replace(alerts.device_silent(device(), now=NOW, reason="Will"), id=2)
    assert escalation.next_due(silent, TIERS, set()) == NOW  # operators only
    assert escalation.next_due(silent, TIERS, {"operators"}) is None  # not partners at +120
    duress = alerts.cancel(alarm(), duress=True, now=NOW + 50)
    assert escalation.next_due(duress, TIERS, {"operators"}) == NOW + 50  # at once
    assert names(escalation.due_tiers(duress, TIERS, {"operators"}, now=NOW + 50)) == [
        "partners", "nearby"]  # fmt: skip


def test_a_joined_alarm_is_counted_keeps_the_newest_fix_and_duress_and_floods_once() -> None:
    first = alarm()
    later = alerts.from_alarm(parties().device_id, EPOCH.hex, 9, Alarm(Trigger.DURESS, fix=replace(
        FIX, age=1.0), battery=40), received_at=NOW + 60)  # fmt: skip
    joined = alerts.join(first, later, now=NOW + 60)
    assert (joined.joined, joined.duress, joined.battery) == (1, True, 40)
    assert joined.last_fix == later.last_fix
    stale = LastFix(1.0, 2.0, taken_at=NOW - 999, received_at=NOW + 70)  # arrived late
    older = replace(later, last_fix=stale, duress=False, battery=None)
    again = alerts.join(joined, older, now=NOW + 70)
    assert (again.joined, again.duress, again.battery, again.last_fix) == (
        2, True, 40, later.last_fix)  # fmt: skip
    assert escalation.flood_due(first, TIERS, set()) is None  # nothing joined yet
    assert escalation.flood_due(again, TIERS, set()) == TIERS[0]
    assert escalation.flood_due(again, TIERS, {escalation.FLOOD_STEP}) is None
    assert (
        "FLOOD: 2 further alarms"
        in compose(
            again, device(), now=NOW, map_url="https://m/{lat}/{lon}", step=escalation.FLOOD_STEP
        ).body
    )


def test_acknowledged_or_closed_alerts_do_not_escalate() -> None:
    acked = alerts.acknowledge(alarm(), by="x", now=NOW)
    assert escalation.due_tiers(acked, TIERS, set(), now=NOW + 999) == []
    assert escalation.next_due(acked, TIERS, set()) is None
    cancelled = alerts.cancel(alarm(), duress=False, now=NOW)
    assert escalation.due_tiers(cancelled, TIERS, set(), now=NOW + 999) == []


def test_duress_escalates_at_once() -> None:
    duress = alerts.cancel(alarm(), duress=True, now=NOW + 1)
    assert names(escalation.due_tiers(duress, TIERS, set(), now=NOW + 1)) == names(list(TIERS))


def test_silent_device_reaches_operators_only() -> None:
    silent = replace(alerts.device_silent(device(), now=NOW, reason="Will"), id=2)
    assert names(escalation.due_tiers(silent, TIERS, set(), now=NOW + 999)) == ["operators"]


def test_recipients_within_radius_and_each_url_once() -> None:
    a = alarm()
    assert escalation.recipients(TIERS[1], CHANNELS, device(), a) == [
        ("partners", "P", "json://p")
    ]
    near = escalation.recipients(TIERS[2], CHANNELS, device(), a)
    assert near == [("nearby", "Near", "json://near")]
    unknown = escalation.recipients(TIERS[2], CHANNELS, device(), alarm(fix=None))
    assert len(unknown) == 3  # position unknown: tell everyone rather than no one
    contacts = Tier("family", 0, ("contacts",))
    assert escalation.recipients(contacts, CHANNELS, device(), a) == [
        ("contacts", "contact of Ana (Oaxaca)", "json://mum")]  # fmt: skip


def test_distance() -> None:
    assert escalation.distance_km(0, 0, 0, 1) == pytest.approx(111.19, abs=0.01)
    assert escalation.distance_km(17.0654, -96.7237, 17.0654, -96.7237) == 0


def test_broadcast_only_after_verification() -> None:
    with pytest.raises(BadTransition, match="not verified"):
        escalation.broadcast_recipients(alarm(), CHANNELS)
    v = alerts.verify(alerts.acknowledge(alarm(), by="x", now=NOW), by="x", now=NOW)
    assert escalation.broadcast_recipients(v, CHANNELS) == [("public", "Press", "json://press")]


# -- watchdog --------------------------------------------------------------------------------


def test_watchdog_flags_silence_and_will_once() -> None:
    seen = replace(device(), last_seen=NOW)
    kw = {"silent_after": 300.0, "last_silent_alert": {}}
    assert watchdog.silent_devices([seen], now=NOW + 300, **kw) == []  # type: ignore[arg-type]
    ((_, why),) = watchdog.silent_devices([seen], now=NOW + 301, **kw)  # type: ignore[arg-type]
    assert "no proof of life for 301 s" in why
    flagged = {seen.device_id: NOW + 301}
    assert (
        watchdog.silent_devices([seen], now=NOW + 900, silent_after=300, last_silent_alert=flagged)
        == []
    )
    will = replace(seen, offline_at=NOW + 10)
    ((_, why),) = watchdog.silent_devices([will], now=NOW + 11, **kw)  # type: ignore[arg-type]
    assert "Will" in why
    revoked = replace(seen, revoked_at=NOW)
    assert watchdog.silent_devices([revoked], now=NOW + 9999, **kw) == []  # type: ignore[arg-type]
    # Version 2: a device never heard from is watched from its enrolment (a broker that
    # swallows everything from day one must not make it invisible).
    never = replace(device(), last_seen=None, enrolled_at=NOW)
    assert watchdog.silent_devices([never], now=NOW + 300, **kw) == []  # type: ignore[arg-type]
    ((_, why),) = watchdog.silent_devices([never], now=NOW + 301, **kw)  # type: ignore[arg-type]
    assert "never heard from since it was enrolled 301 s ago" in why


def test_heartbeats_name_the_worker_past_its_bound() -> None:
    now = [100.0]
    beats = Heartbeats({"ingest": 30.0, "timer": 60.0}, clock=lambda: now[0])
    now[0] = 130.0
    assert beats.stuck() == []
    now[0] = 131.0
    beats.beat("timer")
    assert beats.stuck() == [("ingest", 30.0)]
    assert describe_stuck(beats.stuck()) == "ingest stuck (no round for over 30 s)"
    beats.beat("ingest")
    assert beats.stuck() == []
    with pytest.raises(KeyError, match="delivery"):
        beats.beat("delivery")
    with pytest.raises(ValueError, match="> 0"):
        WorkerBounds(timer=0)


def test_watchdog_measures_silence_from_proof_of_life_not_arrival() -> None:
    """A stashed heartbeat arriving now (last_seen) proves only when it was made (alive_at)."""
    kw = {"silent_after": 300.0, "last_silent_alert": {}}
    stale = replace(device(), last_seen=NOW + 290, alive_at=NOW)
    ((_, why),) = watchdog.silent_devices([stale], now=NOW + 301, **kw)  # type: ignore[arg-type]
    assert "no proof of life for 301 s" in why
    fresh = replace(stale, alive_at=NOW + 290)
    assert watchdog.silent_devices([fresh], now=NOW + 301, **kw) == []  # type: ignore[arg-type]
    flagged = {stale.device_id: NOW + 301}  # flagged again only once proven alive since
    assert watchdog.silent_devices([stale], now=NOW + 900, silent_after=300,
                                   last_silent_alert=flagged) == []  # fmt: skip
    spoke = replace(stale, alive_at=NOW + 400)
    found = watchdog.silent_devices([spoke], now=NOW + 900, silent_after=300,
                                    last_silent_alert=flagged)  # fmt: skip
    assert len(found) == 1


def test_watchdog_has_a_shorter_deadline_inside_a_risk_window() -> None:
    kw = {"silent_after": 600.0, "last_silent_alert": {}, "risk_silent_after": 180.0}
    at_risk = replace(device(), alive_at=NOW, last_seen=NOW, risk_until=NOW + 3600)
    assert watchdog.silent_devices([at_risk], now=NOW + 180, **kw) == []  # type: ignore[arg-type]
    ((_, why),) = watchdog.silent_devices([at_risk], now=NOW + 181, **kw)  # type: ignore[arg-type]
    assert "deadline 180 s" in why
    over = replace(at_risk, risk_until=NOW + 100)  # the trip ended: the usual deadline
    assert watchdog.silent_devices([over], now=NOW + 599, **kw) == []  # type: ignore[arg-type]
    assert len(watchdog.silent_devices([over], now=NOW + 601, **kw)) == 1  # type: ignore[arg-type]


def test_silence_inside_a_risk_window_is_alarm_grade() -> None:
    at_risk = replace(device(), risk_until=NOW + 60)
    dark = replace(alerts.device_silent(at_risk, now=NOW, reason="no proof"), id=3)
    assert (dark.kind, dark.trigger) == (AlertKind.DARK, "went-dark")
    assert names(escalation.due_tiers(dark, TIERS, set(), now=NOW + 999)) == names(list(TIERS))
    later = alerts.device_silent(at_risk, now=NOW + 61, reason="no proof")
    assert later.kind is AlertKind.SILENT


@pytest.mark.parametrize("kind", [AlertKind.WITHHELD, AlertKind.CONFLICT])
def test_suspicions_escalate_like_alarms(kind: AlertKind) -> None:
    raised = replace(alerts.suspicion(device(), kind, trigger=kind.value, now=NOW, reason="r"),
                     id=4)  # fmt: skip
    assert kind.alarm_grade
    assert raised.alarm_seq is None
    assert names(escalation.due_tiers(raised, TIERS, set(), now=NOW + 999)) == names(list(TIERS))


# -- audit chain -----------------------------------------------------------------------------


def chain(n: int) -> list[AuditEntry]:
    out, prev = [], audit.GENESIS
    for i in range(1, n + 1):
        fields = {"id": i, "at": float(i), "actor": "op", "action": "ack", "subject": f"alert {i}",
                  "detail": ""}  # fmt: skip
        h = audit.entry_hash(prev, **fields)  # type: ignore[arg-type]
        out.append(AuditEntry(prev_hash=prev, hash=h, **fields))  # type: ignore[arg-type]
        prev = h
    return out


def test_intact_chain_verifies() -> None:
    entries = chain(4)
    assert audit.verify(entries, (4, entries[-1].hash)) == []
    assert audit.verify([], None) == []


def test_edit_delete_and_truncation_are_detected() -> None:
    entries = chain(4)
    head = (4, entries[-1].hash)
    edited = [*entries[:1], replace(entries[1], actor="mallory"), *entries[2:]]
    assert [p.entry_id for p in audit.verify(edited, head)] == [2]
    deleted = [*entries[:1], *entries[2:]]
    problems = audit.verify(deleted, head)
    assert problems
    assert "missing" in str(problems[0])
    assert audit.verify(entries[:3], head)  # tail cut off


# -- notice text -----------------------------------------------------------------------------


def test_notice_has_what_a_responder_needs() -> None:
    notice = compose(alarm(), device(), now=NOW + 90, map_url="https://map/?{lat},{lon}")
    assert notice.title == "[Vigil] ALARM Ana (Oaxaca): panic button held"
    expected = ["Ana (Oaxaca) needs help", "2025-11-24 16:00:00 UTC", "(2 min old)",
                "https://map/?17.065400,-96.723700", "Battery: 80%", "ack 1"]  # fmt: skip
    for text in expected:
        assert text in notice.body


@pytest.mark.parametrize(
    ("kind", "trigger", "head", "says"),
    [
        (AlertKind.DARK, "went-dark", "WENT DARK", "risk window"),
        (AlertKind.WITHHELD, "withheld", "WITHHELD", "being withheld"),
        (AlertKind.CONFLICT, "conflict", "CLONED KEY?", "cloned"),
        (AlertKind.SILENT, "device-silent", "SILENT", "went silent"),
    ],
)
def test_notices_of_the_hubs_own_alerts_say_what_happened(
    kind: AlertKind, trigger: str, head: str, says: str
) -> None:
    raised = replace(alerts.suspicion(device(), kind, trigger=trigger, now=NOW, reason="r"), id=5)
    notice = compose(raised, device(), now=NOW, map_url="{lat}{lon}")
    assert notice.title.startswith(f"[Vigil] {head} Ana (Oaxaca)")
    assert f"{head}: Ana (Oaxaca)\n" in notice.body + "\n"
    assert "needs help" not in notice.body
    assert says in notice.body


def test_notice_without_fix_and_under_duress() -> None:
    duress = alerts.cancel(alarm(fix=None), duress=True, now=NOW)
    notice = compose(duress, device(), now=NOW, map_url="{lat}{lon}")
    assert notice.title.startswith("[Vigil] DURESS")
    assert "Position: unknown" in notice.body
    assert "made to cancel" in notice.body
