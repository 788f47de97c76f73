"""The operator's view, pure: times, units, hostile text, columns, and valid actions."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta, timezone

import pytest
import wcwidth
from hypothesis import given
from hypothesis import strategies as st

from vigil.hub import alerts, views
from vigil.hub.store import Alert, AlertKind, AlertState
from vigil.wire.ids import DeviceId

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)")
DEVICE = DeviceId.parse("3f2a" * 8)


def test_times_carry_date_and_zone() -> None:
    assert views.Clock.choose(utc=True).at(T0) == "2025-11-24T16:00:00Z"
    oaxaca = views.Clock(timezone(timedelta(hours=-6)))
    assert oaxaca.at(T0) == "2025-11-24T10:00:00-06:00"
    assert ISO.fullmatch(views.Clock().at(T0))  # the local zone, whatever it is
    assert views.Clock.choose(utc=True).at_ago(T0, now=T0 + 17 * 60) == (
        "2025-11-24T16:00:00Z (17 min ago)"
    )
    assert views.Clock().at(None) == "never"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e300, -1e300])
def test_a_corrupt_time_is_named_not_fatal(bad: float) -> None:
    assert views.Clock.choose(utc=True).at(bad).startswith("invalid time")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.94, "0.9 s"), (42, "42 s"), (17 * 60 + 5, "17 min"), (7500, "2 h 5 min"),
     (3 * 86400 + 4 * 3600, "3 d 4 h"), (float("nan"), "unknown")],
)  # fmt: skip
def test_every_span_has_its_unit(seconds: float, text: str) -> None:
    assert views.duration(seconds) == text


def test_ago_and_the_future() -> None:
    assert views.ago(180) == "3 min ago"
    assert views.ago(-30) == "30 s in the future"  # a clock ahead is shown, not hidden
    assert views.percent(64) == "64%"
    assert views.percent(None) == "unknown"


def test_control_characters_cannot_drive_the_terminal() -> None:
    hostile = "Ana\x1b[2J\x1b]0;owned\x07\n\u202eevil\x9b"
    shown = views.clean(hostile)
    assert shown == "Ana\\x1b[2J\\x1b]0;owned\\x07\\n\\u202eevil\\x9b"
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in shown)


@given(st.text())
def test_clean_text_is_printable_and_measurable(text: str) -> None:
    shown = views.clean(text)
    assert views.cells(shown) >= 0
    assert "\x1b" not in shown
    assert "\n" not in shown


def test_fit_cuts_with_an_ellipsis_at_the_stated_width() -> None:
    assert views.fit("rosa", 16) == "rosa"
    cut = views.fit("a" * 40, 16)
    assert cut == "a" * 15 + "…"
    assert views.cells(views.fit("日本語の長い名前です", 7)) <= 7


def test_table_columns_line_up_in_terminal_cells() -> None:
    columns = [views.Column("ID", right=True), views.Column("WHO"), views.Column("STATE")]
    rows = [(1, "Ana", "ok"), (12, "a" * 40, "silent (alert 3)"), (3, "日本語", "ok")]
    lines = views.table(columns, rows)
    starts = [lines[0].index("WHO"), lines[0].index("STATE")]
    for line, (_, who, state) in zip(lines[1:], rows, strict=True):
        # The cell at each column's start (counted in cells) is the expected value.
        assert wcwidth.clip(line, starts[0], starts[1]).strip() == who
        assert wcwidth.clip(line, starts[1], 1000).strip() == state
    assert lines[1].startswith(" 1  Ana")


def test_table_refuses_a_ragged_row() -> None:
    with pytest.raises(ValueError, match="a row of 1 cells for 2 columns"):
        views.table([views.Column("A"), views.Column("B")], [("x",)])


def _alert(state: AlertState, *, verified: bool = False, duress: bool = False) -> Alert:
    return Alert(id=7, device_id=DEVICE, kind=AlertKind.ALARM, state=state, opened_at=T0,
                 updated_at=T0, alarm_seq=1, trigger="button", duress=duress,
                 verified_at=T0 if verified else None)  # fmt: skip


@pytest.mark.parametrize(
    ("alert", "allowed"),
    [
        (_alert(AlertState.OPEN), ["ack", "resolve", "false-alarm"]),
        (_alert(AlertState.OPEN, duress=True), ["ack", "resolve", "false-alarm"]),
        (_alert(AlertState.ACKNOWLEDGED), ["verify", "resolve", "false-alarm"]),
        (_alert(AlertState.ACKNOWLEDGED, verified=True), ["resolve", "broadcast", "false-alarm"]),
        (_alert(AlertState.RESOLVED), []),
        (_alert(AlertState.FALSE_ALARM), []),
        (_alert(AlertState.CANCELLED), []),
    ],
    ids=["open", "duress", "acknowledged", "verified", "resolved", "false-alarm", "cancelled"],
)
def test_only_the_lifecycles_actions_are_suggested(alert: Alert, allowed: list[str]) -> None:
    assert sorted(views.valid_actions(alert)) == sorted(allowed)
    # Each suggested action is one the lifecycle accepts, each other one it refuses.
    for action in ("ack", "verify", "resolve", "false-alarm"):
        if action not in allowed:
            continue
        if action == "ack":
            assert alerts.acknowledge(alert, by="x", now=T0).state is AlertState.ACKNOWLEDGED
        elif action == "verify":
            assert alerts.verify(alert, by="x", now=T0).verified_at == T0
        else:
            assert not alerts.close(alert, false_alarm=action == "false-alarm", now=T0).active


def test_suggestions_are_commands_or_say_why_there_are_none() -> None:
    assert views.suggestions(_alert(AlertState.OPEN))[0] == "next: vigil-hub ack 7 --by NAME"
    assert views.suggestions(_alert(AlertState.RESOLVED)) == ["no actions: the alert is resolved"]
    closed = replace(_alert(AlertState.ACKNOWLEDGED), state=AlertState.FALSE_ALARM)
    assert not any("ack" in s for s in views.suggestions(closed))
