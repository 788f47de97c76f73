"""Versioned schema migrations, shared by SQLite and PostgreSQL.

Each migration is a list of statements with placeholders: `{pk}` (an
auto-numbered primary key), `{blob}` (bytes), `{legacy}` (the epoch of version-1 rows),
`{alert_details}` (the columns every alerts table has);
a statement given as (dialect name, SQL) runs on that dialect only. A migration never changes once
released; add a new one instead. `schema_version` records what was applied.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    pk: str
    blob: str


SQLITE = Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB")
POSTGRES = Dialect("postgresql", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BYTEA")

# What an alert records beyond its identity: every version of the alerts table has it.
_ALERT_DETAILS = """trigger TEXT,
    duress INTEGER NOT NULL DEFAULT 0,
    battery INTEGER,
    fix_lat DOUBLE PRECISION,
    fix_lon DOUBLE PRECISION,
    fix_taken_at DOUBLE PRECISION,
    fix_received_at DOUBLE PRECISION,
    acknowledged_by TEXT,
    acknowledged_at DOUBLE PRECISION,
    verified_at DOUBLE PRECISION,
    closed_at DOUBLE PRECISION,
    note TEXT,"""

MIGRATIONS: tuple[tuple[int, tuple[str | tuple[str, str], ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE devices (
                device_id TEXT PRIMARY KEY,
                label TEXT NOT NULL,
                signing_key TEXT NOT NULL,
                kem_key TEXT NOT NULL,
                contacts TEXT NOT NULL DEFAULT '[]',
                enrolled_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION,
                last_seen DOUBLE PRECISION,
                offline_at DOUBLE PRECISION,
                battery INTEGER,
                fix_lat DOUBLE PRECISION,
                fix_lon DOUBLE PRECISION,
                fix_taken_at DOUBLE PRECISION,
                fix_received_at DOUBLE PRECISION,
                down_seq BIGINT NOT NULL DEFAULT -1,
                window_highest BIGINT NOT NULL DEFAULT -1,
                window_mask {blob} NOT NULL
            )""",
            """CREATE TABLE uplinks (
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                seq BIGINT NOT NULL,
                kind TEXT NOT NULL,
                payload {blob} NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                processed INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (device_id, seq)
            )""",
            "CREATE INDEX uplinks_unprocessed ON uplinks (processed)",
            """CREATE TABLE downlinks (
                id {pk},
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                seq BIGINT NOT NULL,
                kind TEXT NOT NULL,
                arg BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                sent_at DOUBLE PRECISION,
                UNIQUE (device_id, seq)
            )""",
            """CREATE TABLE alerts (
                id {pk},
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                kind TEXT NOT NULL,
                state TEXT NOT NULL,
                opened_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                alarm_seq BIGINT,
                {alert_details}
                UNIQUE (device_id, alarm_seq)
            )""",
            """CREATE TABLE positions (
                device_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                alert_id BIGINT NOT NULL REFERENCES alerts(id),
                lat DOUBLE PRECISION NOT NULL,
                lon DOUBLE PRECISION NOT NULL,
                taken_at DOUBLE PRECISION NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (device_id, seq)
            )""",
            """CREATE TABLE escalation_steps (
                alert_id BIGINT NOT NULL REFERENCES alerts(id),
                step TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (alert_id, step)
            )""",
            """CREATE TABLE deliveries (
                id {pk},
                alert_id BIGINT NOT NULL REFERENCES alerts(id),
                step TEXT NOT NULL,
                channel TEXT NOT NULL,
                label TEXT NOT NULL,
                url TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at DOUBLE PRECISION,
                last_error TEXT,
                UNIQUE (alert_id, step, url)
            )""",
            """CREATE TABLE delivery_attempts (
                delivery_id BIGINT NOT NULL REFERENCES deliveries(id),
                attempt INTEGER NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                ok INTEGER NOT NULL,
                detail TEXT NOT NULL,
                PRIMARY KEY (delivery_id, attempt)
            )""",
            """CREATE TABLE audit (
                id BIGINT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            """CREATE TABLE audit_head (
                one INTEGER PRIMARY KEY CHECK (one = 1),
                last_id BIGINT NOT NULL,
                last_hash TEXT NOT NULL
            )""",
            """CREATE TABLE rejections (
                reason TEXT PRIMARY KEY,
                count BIGINT NOT NULL,
                last_at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)

MIGRATIONS += (
    # 2: hubs sharing a store claim a downlink before publishing it.
    (2, ("ALTER TABLE downlinks ADD COLUMN claimed_until DOUBLE PRECISION",)),
    # 3: when the device's GPS last had a fix (hub time), from heartbeats' fix_age.
    (3, ("ALTER TABLE devices ADD COLUMN gps_fix_at DOUBLE PRECISION",)),
    # 4: loops that cannot die quietly, and periodic work that selects only what is due.
    (
        4,
        (
            # A handler that raised: the uplink stays stored, marked processed, with why.
            "ALTER TABLE uplinks ADD COLUMN error TEXT",
            "CREATE INDEX uplinks_failed ON uplinks (received_at) WHERE error IS NOT NULL",
            # When the escalation timer next looks at an open alert (NULL: never again).
            "ALTER TABLE alerts ADD COLUMN next_escalation_at DOUBLE PRECISION",
            "CREATE INDEX alerts_escalation_due ON alerts (next_escalation_at) "
            "WHERE next_escalation_at IS NOT NULL",
            "UPDATE alerts SET next_escalation_at = opened_at WHERE state = 'open'",
            # Further alarms of a device at its cap of active alerts, joined to this alert.
            "ALTER TABLE alerts ADD COLUMN joined INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX alerts_by_device ON alerts (device_id, state)",
            # Silence is counted from watch_from; NULL once flagged (or never heard from).
            "ALTER TABLE devices ADD COLUMN watch_from DOUBLE PRECISION",
            """UPDATE devices SET watch_from = last_seen
               WHERE last_seen IS NOT NULL AND revoked_at IS NULL AND NOT EXISTS (
                   SELECT 1 FROM alerts a WHERE a.device_id = devices.device_id
                   AND a.kind = 'silent' AND a.opened_at >= devices.last_seen
                   AND a.opened_at >= COALESCE(devices.offline_at, devices.last_seen))""",
            "CREATE INDEX devices_watch ON devices (watch_from) WHERE watch_from IS NOT NULL",
            "CREATE INDEX devices_offline ON devices (offline_at) WHERE offline_at IS NOT NULL",
            "CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending'",
            # Each running hub's view of itself (broker link, workers), for `vigil-hub stats`.
            """CREATE TABLE hub_status (
                instance TEXT PRIMARY KEY,
                status TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)

LEGACY_EPOCH = "0" * 16  # what protocol-version-1 rows are filed under

_ALERTS_V2_SQLITE = (
    """CREATE TABLE alerts_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL REFERENCES devices(device_id),
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        opened_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        alarm_epoch TEXT,
        alarm_seq BIGINT,
        {alert_details}
        next_escalation_at DOUBLE PRECISION,
        joined INTEGER NOT NULL DEFAULT 0,
        UNIQUE (device_id, alarm_epoch, alarm_seq)
    )""",
    "INSERT INTO alerts_v2 SELECT id, device_id, kind, state, opened_at, updated_at, "
    "CASE WHEN alarm_seq IS NULL THEN NULL ELSE '{legacy}' END, alarm_seq, trigger, "
    "duress, battery, fix_lat, fix_lon, fix_taken_at, fix_received_at, acknowledged_by, "
    "acknowledged_at, verified_at, closed_at, note, next_escalation_at, joined FROM alerts",
    "DROP TABLE alerts",  # the store runs migrations with foreign keys off (SQLite's way)
    "ALTER TABLE alerts_v2 RENAME TO alerts",
    "CREATE INDEX alerts_escalation_due ON alerts (next_escalation_at) "
    "WHERE next_escalation_at IS NOT NULL",
    "CREATE INDEX alerts_by_device ON alerts (device_id, state)",
)
_ALERTS_V2_POSTGRES = (
    "ALTER TABLE alerts ADD COLUMN alarm_epoch TEXT",
    "UPDATE alerts SET alarm_epoch = '{legacy}' WHERE alarm_seq IS NOT NULL",
    "ALTER TABLE alerts DROP CONSTRAINT alerts_device_id_alarm_seq_key",
    "ALTER TABLE alerts ADD CONSTRAINT alerts_alarm UNIQUE (device_id, alarm_epoch, alarm_seq)",
)

MIGRATIONS += (
    # 5: protocol version 2. Uplinks, positions, alarms and replay windows are keyed by
    # (device, epoch, seq); receipts name the epoch and digest they answer; a device is
    # alive when its own word proves it (alive_at), and may be in a risk window.
    (
        5,
        (
            """CREATE TABLE device_epochs (
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                epoch TEXT NOT NULL,
                first_seen DOUBLE PRECISION NOT NULL,
                window_highest BIGINT NOT NULL DEFAULT -1,
                window_mask {blob} NOT NULL,
                PRIMARY KEY (device_id, epoch)
            )""",
            "INSERT INTO device_epochs (device_id, epoch, first_seen, window_highest, "
            "window_mask) SELECT device_id, '{legacy}', enrolled_at, window_highest, "
            "window_mask FROM devices",
            "ALTER TABLE devices ADD COLUMN epoch TEXT",
            "ALTER TABLE devices ADD COLUMN alive_at DOUBLE PRECISION",
            "ALTER TABLE devices ADD COLUMN risk_until DOUBLE PRECISION",
            "ALTER TABLE devices ADD COLUMN dup_window_at DOUBLE PRECISION",
            "ALTER TABLE devices ADD COLUMN dup_receipts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE downlinks ADD COLUMN epoch TEXT",
            "ALTER TABLE downlinks ADD COLUMN digest TEXT",
            """CREATE TABLE uplinks_v2 (
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                epoch TEXT NOT NULL,
                seq BIGINT NOT NULL,
                kind TEXT NOT NULL,
                payload {blob} NOT NULL,
                digest TEXT,
                received_at DOUBLE PRECISION NOT NULL,
                processed INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                receipted_at DOUBLE PRECISION,
                PRIMARY KEY (device_id, epoch, seq)
            )""",
            "INSERT INTO uplinks_v2 (device_id, epoch, seq, kind, payload, received_at, "
            "processed, error) SELECT device_id, '{legacy}', seq, kind, payload, received_at, "
            "processed, error FROM uplinks",
            "DROP TABLE uplinks",
            "ALTER TABLE uplinks_v2 RENAME TO uplinks",
            "CREATE INDEX uplinks_unprocessed ON uplinks (processed)",
            "CREATE INDEX uplinks_received ON uplinks (received_at)",
            "CREATE INDEX uplinks_failed ON uplinks (received_at) WHERE error IS NOT NULL",
            # Silence inside a risk window has its own, shorter deadline (few devices).
            "CREATE INDEX devices_at_risk ON devices (risk_until) WHERE risk_until IS NOT NULL",
            # Watched from enrolment: a device never heard from is news too.
            "UPDATE devices SET watch_from = enrolled_at "
            "WHERE last_seen IS NULL AND revoked_at IS NULL",
            *(("sqlite", s) for s in _ALERTS_V2_SQLITE),
            *(("postgresql", s) for s in _ALERTS_V2_POSTGRES),
            """CREATE TABLE positions_v2 (
                device_id TEXT NOT NULL,
                epoch TEXT NOT NULL,
                seq BIGINT NOT NULL,
                alert_id BIGINT NOT NULL REFERENCES alerts(id),
                lat DOUBLE PRECISION NOT NULL,
                lon DOUBLE PRECISION NOT NULL,
                taken_at DOUBLE PRECISION NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (device_id, epoch, seq)
            )""",
            "INSERT INTO positions_v2 SELECT device_id, "
            "'{legacy}', seq, alert_id, lat, lon, taken_at, received_at FROM positions",
            "DROP TABLE positions",
            "ALTER TABLE positions_v2 RENAME TO positions",
        ),
    ),
)

MIGRATIONS += (
    # 6: the captor (issue 12). A device whose tamper alarm is stored is compromised: its
    # later messages may be a captor's. Devices may hold a hybrid downlink key, and rotate
    # their downlink keys: announced in chunks inside heartbeats, reassembled per
    # (device, epoch, key id), used once verified (docs/protocol.md §11).
    (
        6,
        (
            "ALTER TABLE devices ADD COLUMN compromised_at DOUBLE PRECISION",
            "ALTER TABLE devices ADD COLUMN compromised_reason TEXT",
            "ALTER TABLE devices ADD COLUMN hybrid_kem_key TEXT",
            """CREATE TABLE device_kems (
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                epoch TEXT NOT NULL,
                key_id TEXT NOT NULL,
                public_key TEXT NOT NULL,
                verified_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (device_id, epoch, key_id)
            )""",
            """CREATE TABLE device_kem_parts (
                device_id TEXT NOT NULL REFERENCES devices(device_id),
                epoch TEXT NOT NULL,
                key_id TEXT NOT NULL,
                at_offset INTEGER NOT NULL,
                size INTEGER NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (device_id, epoch, key_id, at_offset)
            )""",
        ),
    ),
)

_ACTIVE_SUSPICION = "alarm_seq IS NULL AND state IN ('open', 'acknowledged')"

MIGRATIONS += (
    # 7: a hub that keeps up with a fleet, several hubs on one store.
    (
        7,
        (
            # Bumped with every enrol, revoke, risk window and compromise: hubs cache the
            # registry until it moves.
            """CREATE TABLE registry_version (
                one INTEGER PRIMARY KEY CHECK (one = 1),
                version BIGINT NOT NULL
            )""",
            "INSERT INTO registry_version (one, version) VALUES (1, 0)",
            # Unsent downlinks (flushed every tick) and sent ones (pruned after a retention)
            # by index: neither query may read every receipt ever sent.
            "CREATE INDEX downlinks_unsent ON downlinks (id) WHERE sent_at IS NULL",
            "CREATE INDEX downlinks_sent ON downlinks (sent_at) WHERE sent_at IS NOT NULL",
            "DROP INDEX uplinks_unprocessed",
            "CREATE INDEX uplinks_unprocessed ON uplinks (received_at) WHERE processed = 0",
            # At most one active alert the hub raised itself (silent, dark, withheld, conflict)
            # per device and kind, whichever hub raised it. Older duplicates a race left
            # are closed first, pointing at the one that stays.
            f"""UPDATE alerts SET state = 'resolved', closed_at = updated_at,
                   next_escalation_at = NULL,
                   note = 'closed by migration 7: a duplicate of a newer active alert'
               WHERE {_ACTIVE_SUSPICION} AND id NOT IN (
                   SELECT MAX(id) FROM alerts WHERE {_ACTIVE_SUSPICION}
                   GROUP BY device_id, kind)""",  # noqa: S608 - constant fragments
            f"CREATE UNIQUE INDEX alerts_one_active_suspicion ON alerts (device_id, kind) "
            f"WHERE {_ACTIVE_SUSPICION}",
        ),
    ),
)

MIGRATIONS += (
    # 8: a hub's registry cache forgets only the devices that changed, not the whole fleet.
    (
        8,
        (
            "ALTER TABLE devices ADD COLUMN registry_version BIGINT NOT NULL DEFAULT 0",
            "CREATE INDEX devices_registry_version ON devices (registry_version)",
        ),
    ),
)

LATEST = MIGRATIONS[-1][0]

Statement = str | tuple[str, str]  # SQL for every dialect, or (dialect name, SQL)


def statements(version: int, dialect: Dialect) -> list[str]:
    """The statements of migration `version`, rendered for `dialect`."""
    for number, stmts in MIGRATIONS:
        if number == version:
            return [
                s.format(
                    pk=dialect.pk,
                    blob=dialect.blob,
                    legacy=LEGACY_EPOCH,
                    alert_details=_ALERT_DETAILS,
                )
                for s in (_for(stmt, dialect) for stmt in stmts)
                if s is not None
            ]
    raise KeyError(version)


def _for(stmt: Statement, dialect: Dialect) -> str | None:
    if isinstance(stmt, str):
        return stmt
    name, sql = stmt
    return sql if name == dialect.name else None
