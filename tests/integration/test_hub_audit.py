"""The audit log against a database writer: a real SQLite store file, edited with sqlite3.

Each attack is what someone with write access to the database (but not the hub's
private key) can do in a minute; `vigil-hub audit verify` must fail on each.
"""

from __future__ import annotations

import io
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.support.hubrig import FakeClock
from tests.support.parties import parties
from vigil.hub import audit
from vigil.hub.channels import AppriseNotifier
from vigil.hub.cli import main
from vigil.hub.config import load_config
from vigil.hub.daemon import HubService
from vigil.hub.store import open_store

pytestmark = pytest.mark.integration


def hub_audit(service: HubService, *args: str) -> None:
    with service.store.transaction() as tx:
        service.audit(tx, *args)


def write_config(folder: Path, extra: str = "") -> Path:
    """A hub config (no broker needed: only the store and the keys are used)."""
    folder.mkdir(exist_ok=True)
    if not (folder / "hub.key").exists():
        parties().hub.save(folder / "hub.key")
    path = folder / "hub.toml"
    path.write_text(
        '[hub]\nkeys = "hub.key"\n[store]\nurl = "sqlite:///hub.db"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = 1883\n{extra}'
    )
    assert main(["init", "--config", str(path)], out=io.StringIO()) == 0
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def cli(path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main([*args, "--config", str(path)], out=out), out.getvalue()


def operator_actions(config: Path, count: int) -> None:
    """Enrol the test device, then revoke it `count - 1` times: one audit entry each."""
    keys = parties().device.public().to_text()
    status, _ = cli(config, "enroll", "--device-id", parties().device_id.hex, "--label", "Ana",
                    "--signing", keys["signing"], "--kem", keys["kem"])  # fmt: skip
    assert status == 0
    for _ in range(count - 1):
        assert cli(config, "revoke", parties().device_id.hex)[0] == 0


def database(config: Path) -> sqlite3.Connection:
    return sqlite3.connect(config.parent / "hub.db")


def rehash_from(db: sqlite3.Connection, first_id: int) -> None:
    """Recompute every hash from `first_id` on and the head, as a careful writer would."""
    rows = db.execute(
        "SELECT id, at, actor, action, subject, detail, prev_hash FROM audit ORDER BY id"
    ).fetchall()
    prev = audit.GENESIS
    for id_, at, actor, action, subject, detail, stored_prev in rows:
        if id_ < first_id:
            prev = audit.entry_hash(stored_prev, id=id_, at=at, actor=actor, action=action,
                                    subject=subject, detail=detail)  # fmt: skip
            continue
        digest = audit.entry_hash(prev, id=id_, at=at, actor=actor, action=action,
                                  subject=subject, detail=detail)  # fmt: skip
        db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, id_))
        prev = digest
    db.execute("UPDATE audit_head SET last_id = ?, last_hash = ?", (rows[-1][0], prev))


def test_deleting_the_tail_fails_verify(config: Path) -> None:
    operator_actions(config, 4)
    assert cli(config, "audit", "verify")[0] == 0
    with database(config) as db:
        (keep,) = db.execute("SELECT MIN(id) FROM audit WHERE action = 'revoke'").fetchone()
        db.execute("DELETE FROM audit WHERE id > ?", (keep,))
        db.execute(
            "UPDATE audit_head SET last_id = id, last_hash = hash FROM "
            "(SELECT id, hash FROM audit WHERE id = ?)",
            (keep,),
        )
    db.close()
    status, out = cli(config, "audit", "verify")
    assert status == 1, out
    assert "were deleted" in out


def test_rewriting_an_entry_and_rehashing_fails_verify(config: Path) -> None:
    operator_actions(config, 3)
    with database(config) as db:
        db.execute("UPDATE audit SET actor = 'someone else' WHERE id = 1")
        rehash_from(db, 1)
    db.close()
    status, out = cli(config, "audit", "verify")
    assert status == 1, out
    assert "rewritten" in out


def test_wiping_the_log_fails_verify(config: Path) -> None:
    operator_actions(config, 2)
    with database(config) as db:
        db.execute("DELETE FROM audit")
        db.execute("DELETE FROM audit_head")
    db.close()
    status, out = cli(config, "audit", "verify")
    assert status == 1, out
    assert "wiped" in out


# -- verifying elsewhere, anchoring on demand ----------------------------------------------------


def test_verify_with_the_public_key_alone(config: Path, tmp_path: Path) -> None:
    operator_actions(config, 2)
    status, pubkey = cli(config, "pubkey")
    assert status == 0
    # Another machine: a copy of the database and of the anchors, the public key, no hub key.
    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    (elsewhere / "hub.db").write_bytes((tmp_path / "hub.db").read_bytes())
    (elsewhere / "anchors").write_text((tmp_path / "audit-anchors.txt").read_text())
    (elsewhere / "hub.pub").write_text(pubkey)
    copy = elsewhere / "hub.toml"
    copy.write_text(config.read_text())
    signing = next(line for line in pubkey.splitlines() if line.startswith("signing"))
    (elsewhere / "bare.pub").write_text(signing.split('"')[1] + "\n")
    for key_file in ("hub.pub", "bare.pub"):
        status, out = cli(copy, "audit", "verify", "--anchor", str(elsewhere / "anchors"),
                          "--public-key", str(elsewhere / key_file))  # fmt: skip
        assert status == 0, out
        assert f"ANCHOR OK {elsewhere / 'anchors'}:2: entries 1..3" in out
    assert not (elsewhere / "hub.key").exists()
    status, _ = cli(copy, "audit", "verify")
    assert status == 1  # without --public-key there is no key to check with


def test_missing_or_wrong_public_key_is_one_clear_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator_actions(config, 1)
    (tmp_path / "hub.key").unlink()
    assert cli(config, "audit", "verify")[0] == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pass --public-key FILE" in err
    (tmp_path / "junk.pub").write_text("signing = 42\n")
    assert cli(config, "audit", "verify", "--public-key", str(tmp_path / "junk.pub"))[0] == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "junk.pub" in err
    assert "ed25519:<base64>" in err


def test_anchor_on_demand_catches_a_deleted_tail_the_hub_file_no_longer_shows(
    config: Path, tmp_path: Path
) -> None:
    operator_actions(config, 2)
    kept = tmp_path / "usb" / "anchors.txt"
    status, out = cli(config, "audit", "anchor", "--out", str(kept))
    assert (status, out) == (0, f"anchored entries 1..3 in {kept}\n")
    status, out = cli(config, "audit", "anchor", "--out", "-")
    assert status == 0
    assert out.startswith("vigil-audit-anchor v1 entry=3 ")
    with database(config) as db:  # the writer cuts the tail and the hub's own anchor file
        db.execute("DELETE FROM audit WHERE id > 2")
        db.execute("UPDATE audit_head SET last_id = 2, last_hash = (SELECT hash FROM audit "
                   "WHERE id = 2)")  # fmt: skip
    db.close()
    (tmp_path / "audit-anchors.txt").write_text(
        (tmp_path / "audit-anchors.txt").read_text().splitlines()[0] + "\n"
    )
    assert cli(config, "audit", "verify")[0] == 0  # what the writer left is consistent...
    status, out = cli(config, "audit", "verify", "--anchor", str(kept))
    assert status == 1  # ...but not with the copy the operator kept
    assert f"ANCHOR FAILED {kept}:1: entries 1..3" in out
    assert "entries 3..3 were deleted" in out


def test_a_deleted_anchor_file_and_unanchored_entries_are_reported(
    config: Path, tmp_path: Path
) -> None:
    operator_actions(config, 2)
    store = open_store(load_config(config).store_url)
    with store.transaction() as tx:
        tx.audit.append(at=1.0, actor="hub", action="escalated", subject="alert 1")
    store.close()
    status, out = cli(config, "audit", "verify")
    assert status == 0
    assert "NOT YET ANCHORED entries 5..5: a database writer could still rewrite" in out
    (tmp_path / "audit-anchors.txt").unlink()
    status, out = cli(config, "audit", "verify")
    assert status == 1
    assert "audit-anchors.txt: missing, though the log holds 2 checkpoint(s)" in out
    status, out = cli(config, "audit", "verify", "--anchor", str(tmp_path / "nowhere"))
    assert status == 1
    assert "nowhere: cannot read: No such file or directory" in out


def test_an_operator_without_the_hub_key_still_acts(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator_actions(config, 1)
    capsys.readouterr()
    (tmp_path / "hub.key").chmod(0o644)  # a key the hub refuses to use
    try:
        status, out = cli(config, "revoke", parties().device_id.hex)
    finally:
        (tmp_path / "hub.key").chmod(0o600)
    assert status == 0
    assert out.startswith("revoked ")
    note = capsys.readouterr().err
    assert note.startswith("vigil-hub: note: this action is logged but not yet signed")
    assert "the running hub signs it within 300 s" in note


# -- the running hub's schedule -----------------------------------------------------------------


def hub_service(config: Path, clock: FakeClock) -> HubService:
    cfg = load_config(config)
    return HubService(cfg, store=open_store(cfg.store_url), hub_keys=parties().hub,
                      notifier=AppriseNotifier(), clock=clock)  # fmt: skip


def actions(service: HubService) -> list[str]:
    with service.store.read() as tx:
        return [e.action for e in tx.audit.entries()]


def test_the_hub_signs_every_n_entries_every_t_seconds_and_on_stop(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[audit]\ncheckpoint_every = 3\ncheckpoint_interval = 60\n")
    clock = FakeClock()
    service = hub_service(config, clock)
    try:
        hub_audit(service, "device silent", "alert 1", "no heartbeat")
        service.tick()
        clock.advance(59)
        service.tick()
        assert actions(service) == ["device silent"]
        clock.advance(1)
        service.tick()
        assert actions(service)[-1] == "checkpoint"
        clock.advance(3600)
        service.tick()  # an idle hub adds nothing
        assert len(actions(service)) == 2
        for _ in range(3):
            hub_audit(service, "escalated", "alert 1")
        service.tick()  # a flood is signed every 3 entries, without waiting
        assert actions(service)[-2:] == ["escalated", "checkpoint"]
        hub_audit(service, "escalated", "alert 1")
        service.checkpoints.flush(clock())  # what serve() does on stop
        assert actions(service)[-1] == "checkpoint"
    finally:
        service.store.close()
    assert len((tmp_path / "audit-anchors.txt").read_text().splitlines()) == 3
    status, out = cli(config, "audit", "verify")
    assert (status, out.splitlines()[-2:]) == (0, [
        "ANCHORED every entry up to 7 (any later entries are checkpoints)",
        "audit log: 8 entries, intact"])  # fmt: skip


def test_the_hub_refuses_to_sign_a_tampered_log(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    service = hub_service(config, clock)
    try:
        hub_audit(service, "device silent", "alert 1", "no heartbeat")
        with database(config) as db:
            db.execute("UPDATE audit SET detail = 'nothing' WHERE id = 1")
        db.close()
        hub_audit(service, "escalated", "alert 1")
        service.tick()
        clock.advance(300)
        with caplog.at_level(logging.ERROR, logger="vigil.hub.checkpoints"):
            service.tick()
        assert actions(service) == ["device silent", "escalated"]
        assert "entry 1: was edited" in caplog.text
        assert "not signing it" in caplog.text
    finally:
        service.store.close()


def test_an_unwritable_anchor_file_is_a_note_and_the_checkpoint_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[audit]\nanchor_file = "."\n')  # a folder, not a file
    operator_actions(config, 1)
    note = capsys.readouterr().err
    assert note.startswith("vigil-hub: note: cannot append to the audit anchor file")
    assert "the checkpoint is in the log" in note
    status, out = cli(config, "audit", "anchor", "--out", str(tmp_path / "kept"))
    assert (status, out) == (0, f"anchored entries 1..1 in {tmp_path / 'kept'}\n")
