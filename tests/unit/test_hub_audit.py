"""Signed heads and the audit report (pure): format, hostile lines, signatures, coverage."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from vigil.errors import BadConfigValue, BadSignature, MalformedAnchor
from vigil.hub import anchors, audit
from vigil.hub.config import load_config
from vigil.hub.store.records import AuditEntry

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
AT = 1_764_000_000.0


def signed(entry_id: int = 7, digest: str = "ab" * 32, key: Ed25519PrivateKey = KEY) -> str:
    return anchors.sign_head(key, entry_id=entry_id, hash=digest, at=AT).to_line()


# -- the anchor line ---------------------------------------------------------------------------


def test_line_round_trips_and_names_its_parts() -> None:
    line = signed()
    head = anchors.parse(line)
    assert line.startswith("vigil-audit-anchor v1 entry=7 hash=" + "ab" * 32)
    assert " at=2025-11-24T16:00:00Z key=sha256:" in line
    assert head.key == anchors.fingerprint(KEY.public_key())
    assert head.to_line() == line
    assert head.when() == "2025-11-24 16:00:00 UTC"
    head.check(KEY.public_key())
    assert anchors.parse(line + "\n") == head  # read from a file, newline and all


@given(st.integers(1, 2**63 - 1), st.binary(min_size=32, max_size=32), st.floats(0, 2e9))
def test_any_head_round_trips(entry_id: int, raw: bytes, at: float) -> None:
    head = anchors.sign_head(KEY, entry_id=entry_id, hash=raw.hex(), at=at)
    assert anchors.parse(head.to_line()) == head
    head.check(KEY.public_key())


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda s: "", "does not start"),
        (lambda s: "garbage\x00\xff", "does not start"),
        (lambda s: s[:120], "truncated"),
        (lambda s: s[:-3], "truncated"),
        (lambda s: s.replace(" v1 ", " v2 "), "format v2"),
        (lambda s: s.replace("entry=7", "entry=07"), "truncated or altered"),
        (lambda s: s.replace("entry=7", "entry=-7"), "truncated or altered"),
        (lambda s: s.replace("entry=7", "entry=99999999999999999999"), "truncated or altered"),
        (lambda s: s.replace("entry=7", "entry=9223372036854775808"), "entry id"),
        (lambda s: s.replace("hash=ab", "hash=AB"), "truncated or altered"),
        (lambda s: s.replace("16:00:00Z", "16:00:61Z"), "invalid time"),
        (lambda s: s.replace("2025-11-24", "2025-13-24"), "invalid time"),
        (lambda s: s.replace(" at=", "  at="), "truncated or altered"),
        (lambda s: s + " extra=1", "truncated or altered"),
        (lambda s: s + "A" * 400, "too long"),
    ],
    ids=[
        "empty",
        "binary",
        "cut",
        "cut-signature",
        "future-version",
        "leading-zero",
        "negative",
        "huge-id",
        "id-over-bigint",
        "upper-hex",
        "bad-second",
        "bad-month",
        "double-space",
        "extra-field",
        "oversize",
    ],
)
def test_garbled_lines_are_refused_with_a_reason(mangle: object, why: str) -> None:
    with pytest.raises(MalformedAnchor, match=why):
        anchors.parse(mangle(signed()))  # type: ignore[operator]


def test_a_signature_with_spare_bits_is_not_canonical() -> None:
    # 64 bytes are 86 base64 digits: the last one carries 2 bits and 4 spare ones.
    line = signed()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = line[:-3] + alphabet[alphabet.index(line[-3]) ^ 1] + "=="
    assert base64.b64decode(twin[-88:]) == base64.b64decode(line[-88:])
    with pytest.raises(MalformedAnchor, match="canonical"):
        anchors.parse(twin)


@pytest.mark.parametrize("field", ["entry=", "hash=", "at=202", "key=sha256:"])
def test_one_changed_field_breaks_the_signature(field: str) -> None:
    line = signed()
    start = line.index(field) + len(field)
    flipped = line[:start] + ("1" if line[start] != "1" else "2") + line[start + 1 :]
    head = anchors.parse(flipped)
    with pytest.raises(BadSignature):
        head.check(KEY.public_key())


def test_another_keys_anchor_is_named_as_such() -> None:
    head = anchors.parse(signed(key=OTHER))
    with pytest.raises(BadSignature, match="not by this hub's"):
        head.check(KEY.public_key())
    forged = replace(head, key=anchors.fingerprint(KEY.public_key()))
    with pytest.raises(BadSignature, match="forged or altered"):
        forged.check(KEY.public_key())


# -- the chain with checkpoints ----------------------------------------------------------------


def log(*actions: str) -> list[AuditEntry]:
    """A chain of entries; "checkpoint" entries sign the entry before them with KEY."""
    out: list[AuditEntry] = []
    prev = audit.GENESIS
    for i, action in enumerate(actions, start=1):
        detail = signed(i - 1, out[-1].hash) if action == audit.CHECKPOINT else ""
        fields = {"id": i, "at": AT + i, "actor": "op", "action": action,
                  "subject": f"alert {i}", "detail": detail}  # fmt: skip
        digest = audit.entry_hash(prev, **fields)  # type: ignore[arg-type]
        out.append(AuditEntry(prev_hash=prev, hash=digest, **fields))  # type: ignore[arg-type]
        prev = digest
    return out


def rehashed(entries: list[AuditEntry]) -> list[AuditEntry]:
    out, prev = [], audit.GENESIS
    for e in entries:
        digest = audit.entry_hash(prev, id=e.id, at=e.at, actor=e.actor, action=e.action,
                                  subject=e.subject, detail=e.detail)  # fmt: skip
        out.append(replace(e, prev_hash=prev, hash=digest))
        prev = digest
    return out


def anchor_of(entry: AuditEntry, source: str = "anchors:1") -> audit.Anchor:
    return audit.Anchor(source, anchors.parse(signed(entry.id, entry.hash)))


def verdict(entries: list[AuditEntry], *anchored: audit.Anchor) -> list[str]:
    head = (entries[-1].id, entries[-1].hash) if entries else None
    found = audit.report(entries, head, key=KEY.public_key(), anchored=anchored)
    return [f"{'ok' if f.ok else 'FAIL'} {f}" for f in found]


def test_an_intact_anchored_log_reports_what_each_anchor_covers() -> None:
    entries = log("ack", "checkpoint", "resolve", "checkpoint")
    lines = verdict(entries, anchor_of(entries[0]), anchor_of(entries[2], "anchors:2"))
    assert lines == [
        "ok CHECKPOINTS 2 signed by the hub; the last covers entries 1..3 (signed "
        "2025-11-24 16:00:00 UTC)",
        "ok ANCHOR OK anchors:1: entries 1..1 (signed 2025-11-24 16:00:00 UTC) are present, "
        "unchanged",
        "ok ANCHOR OK anchors:2: entries 1..3 (signed 2025-11-24 16:00:00 UTC) are present, "
        "unchanged",
        "ok ANCHORED every entry up to 3 (any later entries are checkpoints)",
    ]


def test_entries_after_the_last_anchor_are_not_yet_anchored() -> None:
    entries = log("ack", "checkpoint", "escalated", "resolve")
    assert verdict(entries, anchor_of(entries[0]))[-1] == (
        "ok NOT YET ANCHORED entries 3..4: a database writer could still rewrite or delete "
        "them unnoticed"
    )
    assert "entries 1..4" in verdict(entries)[-1]  # no anchor at all


def test_deleted_tail_rewrite_and_wipe_each_fail_an_anchor() -> None:
    entries = log("ack", "checkpoint", "resolve", "checkpoint")
    anchor = anchor_of(entries[2])
    assert "entries 3..3 were deleted" in " ".join(verdict(entries[:2], anchor))
    rewritten = rehashed([replace(entries[0], actor="mallory"), *entries[1:]])
    lines = verdict(rewritten, anchor)
    assert "FAIL TAMPERED entry 2: signs entry 1 with hash" in lines[0]
    assert "entries up to 3 were rewritten" in " ".join(lines)
    assert "the log is empty: it was wiped" in " ".join(verdict([], anchor))


def test_checkpoints_alone_catch_a_rehashed_rewrite_below_them() -> None:
    entries = log("ack", "checkpoint", "resolve")
    rewritten = rehashed([replace(entries[0], detail="nothing happened"), *entries[1:]])
    problems = audit.checkpoint_problems(rewritten, KEY.public_key())
    assert [p.entry_id for p in problems] == [2]
    assert "were rewritten" in str(problems[0])


@pytest.mark.parametrize(
    ("detail", "why"),
    [
        ("not a signed head", "cannot be read|fails: does not start"),
        (signed(1, "cd" * 32, key=OTHER), "not by this hub's"),
        (signed(5, "cd" * 32), "later entry 5"),
    ],
    ids=["garbage", "other-key", "forward"],
)
def test_a_forged_checkpoint_entry_is_reported(detail: str, why: str) -> None:
    entries = log("ack", "resolve")
    forged = rehashed([*entries, replace(entries[0], id=3, action="checkpoint", detail=detail)])
    problems = audit.checkpoint_problems(forged, KEY.public_key())
    assert [p.entry_id for p in problems] == [3]
    assert any(part in str(problems[0]) for part in why.split("|"))


def test_a_forged_anchor_and_an_unreadable_one_fail() -> None:
    entries = log("ack", "checkpoint")
    stranger = audit.Anchor("a:1", anchors.parse(signed(1, entries[0].hash, key=OTHER)))
    found = audit.read_anchors("# kept by the duty desk\n\nnot an anchor\n", "a")
    assert found == [audit.Anchor("a:3", None, "not an anchor: does not start with "
                                  "'vigil-audit-anchor '")]  # fmt: skip
    lines = verdict(entries, stranger, *found)
    assert lines[1].startswith("FAIL ANCHOR FAILED a:1: signed by key sha256:")
    assert lines[2] == ("FAIL ANCHOR FAILED a:3: not an anchor: does not start with "
                        "'vigil-audit-anchor '")  # fmt: skip


def test_to_sign_skips_a_log_that_ends_in_a_checkpoint() -> None:
    assert audit.to_sign([]) is None
    entries = log("ack", "checkpoint")
    assert audit.to_sign(entries) is None
    assert audit.to_sign(entries[:1]) == entries[0]


# -- when to sign ------------------------------------------------------------------------------


def test_policy_signs_after_n_entries_or_t_seconds_and_never_when_idle() -> None:
    policy = audit.CheckpointPolicy(every=10, interval=300)
    assert not policy.due(new_entries=0, waiting=10_000)
    assert not policy.due(new_entries=9, waiting=299)
    assert policy.due(new_entries=10, waiting=0)
    assert policy.due(new_entries=1, waiting=300)
    with pytest.raises(ValueError, match="every"):
        audit.CheckpointPolicy(every=0)
    with pytest.raises(ValueError, match="seconds"):
        audit.CheckpointPolicy(interval=float("nan"))


def test_audit_config_defaults_and_errors(tmp_path: Path) -> None:
    base = '[hub]\nkeys = "state/hub.key"\n[store]\nurl = "sqlite:///hub.db"\n[mqtt]\nhost = "h"\n'
    path = tmp_path / "hub.toml"
    path.write_text(base)
    config = load_config(path)
    assert config.audit.anchor_file == tmp_path / "state" / "audit-anchors.txt"
    assert config.audit.checkpoints == audit.CheckpointPolicy()
    path.write_text(base + '[audit]\nanchor_file = "/srv/a.txt"\ncheckpoint_every = 5\n')
    config = load_config(path)
    assert (config.audit.anchor_file, config.audit.checkpoints.every) == (Path("/srv/a.txt"), 5)
    for bad, key in (("checkpoint_interval = 0", "audit.checkpoint_interval"),
                     ("checkpoint_every = 0", "audit.checkpoint_every"),
                     ('anchor_file = ""', "audit.anchor_file")):  # fmt: skip
        path.write_text(f"{base}[audit]\n{bad}\n")
        with pytest.raises(BadConfigValue, match=key):
            load_config(path)
