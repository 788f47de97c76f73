"""The audit log against a database writer: a real SQLite store file, edited with sqlite3.

Each attack is what someone with write access to the database (but not the hub's
private key) can do in a minute; `vigil-hub audit verify` must fail on each.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from tests.support.parties import parties
from vigil.hub import audit
from vigil.hub.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A hub config (no broker needed: only the store and the keys are used)."""
    parties().hub.save(tmp_path / "hub.key")
    path = tmp_path / "hub.toml"
    path.write_text(
        '[hub]\nkeys = "hub.key"\n[store]\nurl = "sqlite:///hub.db"\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 1883\n'
    )
    return path


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
