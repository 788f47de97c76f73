"""`tx.intake`: a batch of uplinks read and written with one statement per table.

The ingest pipeline (`vigil.hub.ingest`) locks the batch's devices, reads their
replay windows, decides every uplink in memory, then writes all rows of a table
in one `executemany`. Receipts get their downlink seqs from the locked device
rows, so nobody else allocates one for these devices until the batch commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from vigil.hub.store import schema
from vigil.hub.store.devices import MASK_BYTES
from vigil.hub.store.records import AlertKind, AlertState
from vigil.hub.store.repo import Repository, Row, T
from vigil.wire.replay import ReplayWindow

WindowKey = tuple[str, str]  # (device id hex, epoch)


@dataclass(frozen=True, slots=True)
class DeviceLock:
    """What a batch needs of a device row it holds locked."""

    device_id: str
    epoch: str | None
    down_seq: int
    revoked: bool


@dataclass(frozen=True, slots=True)
class NewUplink:
    device_id: str
    epoch: str
    seq: int
    kind: str
    payload: bytes
    digest: str


@dataclass(frozen=True, slots=True)
class QueuedReceipt:
    """A `stored` receipt of this batch: downlink `seq` of the device, for uplink `arg`."""

    device_id: str
    seq: int
    arg: int
    epoch: str
    digest: str


@dataclass(slots=True)
class ReceiptMarks:
    """Receipts written as sent that the broker did not take: given back to the timer's
    flush by the next batch's transaction (or the timer's), not by one of their own."""

    unsent: list[QueuedReceipt] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.unsent)


_UPLINK_COLUMNS = (("device_id", "text"), ("epoch", "text"), ("seq", "bigint"), ("kind", "text"),
                   ("payload", "bytea"), ("digest", "text"),
                   ("received_at", "double precision"))  # fmt: skip
_RECEIPT_COLUMNS = (("device_id", "text"), ("seq", "bigint"), ("arg", "bigint"),
                    ("created_at", "double precision"), ("epoch", "text"), ("digest", "text"),
                    ("sent_at", "double precision"))  # fmt: skip


class Intake(Repository):
    """Bulk reads and writes of one ingest batch; see the module docstring."""

    def lock_devices(self, device_ids: Sequence[str]) -> Callable[[], dict[str, DeviceLock]]:
        """Lock the rows of `device_ids` (in id order, so two hubs never deadlock); taken
        later (`Repository._later`)."""
        if not device_ids:
            return dict
        among, params = self._in("device_id", sorted(device_ids))

        def parse(rows: list[Row]) -> dict[str, DeviceLock]:
            locks = (DeviceLock(r["device_id"], r["epoch"], int(r["down_seq"]),
                                r["revoked_at"] is not None) for r in rows)  # fmt: skip
            return {lock.device_id: lock for lock in locks}

        return self._later(
            "SELECT device_id, epoch, down_seq, revoked_at FROM devices "  # noqa: S608
            f"WHERE {among} ORDER BY device_id{self._for_update}",
            params,
            parse,
        )

    def windows(self, keys: Iterable[WindowKey]) -> Callable[[], dict[WindowKey, ReplayWindow]]:
        """The replay windows of the lives in `keys` that exist; taken later."""
        wanted = set(keys)
        if not wanted:
            return dict

        def parse(rows: list[Row]) -> dict[WindowKey, ReplayWindow]:
            return {
                (r["device_id"], r["epoch"]): ReplayWindow(
                    r["window_highest"], int.from_bytes(bytes(r["window_mask"]), "big")
                )
                for r in rows
                if (r["device_id"], r["epoch"]) in wanted
            }

        return self._lives(
            "SELECT device_id, epoch, window_highest, window_mask FROM device_epochs",
            wanted, parse,
        )  # fmt: skip

    def _lives(self, select: str, wanted: set[WindowKey], parse: Callable[[list[Row]], T],
               order: str = "") -> Callable[[], T]:  # fmt: skip
        """Rows of the lives in `wanted` (`select` reads one table with device_id and epoch
        columns), found by their (device_id, epoch) primary key.

        Not `(device_id, epoch) IN (VALUES ...)`: SQLite scans the whole table for that, a
        cost on every batch that grows with the fleet; it gets two IN lists (the caller drops
        the few pairs they cross into that it did not ask for). Not two `= ANY` arrays on
        PostgreSQL: a prepared plan probes the index for every pair of the two (9 ms for a
        batch of 64); it joins the pairs instead."""
        if self._dialect is schema.POSTGRES:
            pairs = sorted(wanted)
            return self._later(
                f"{select} JOIN unnest(CAST(%b AS text[]), CAST(%b AS text[])) "
                f"AS w(device_id, epoch) USING (device_id, epoch){order}",
                [[d for d, _ in pairs], [e for _, e in pairs]],
                parse,
            )
        devices, of_devices = self._in("device_id", sorted({d for d, _ in wanted}))
        epochs, of_epochs = self._in("epoch", sorted({e for _, e in wanted}))
        return self._later(f"{select} WHERE {devices} AND {epochs}{order}",
                           [*of_devices, *of_epochs], parse)  # fmt: skip

    def newest_keys(self, keys: Iterable[WindowKey]) -> Callable[[], dict[WindowKey, str]]:
        """The newest downlink key verified in each of these lives, where there is one
        (one query for a batch's receipts; `tx.kems.newest` for one); taken later."""
        wanted = set(keys)
        if not wanted:
            return dict

        def parse(rows: list[Row]) -> dict[WindowKey, str]:
            return {
                (r["device_id"], r["epoch"]): str(r["public_key"])
                for r in rows
                if (r["device_id"], r["epoch"]) in wanted
            }  # the newest wins

        return self._lives(
            "SELECT device_id, epoch, key_id, public_key, verified_at FROM device_kems",
            wanted, parse, " ORDER BY verified_at, key_id DESC",
        )  # fmt: skip

    def new_window(self, device_id: str, epoch: str, *, now: float) -> None:
        self._cur.execute(
            "INSERT INTO device_epochs (device_id, epoch, first_seen, window_mask) "
            "VALUES (?, ?, ?, ?)",
            (device_id, epoch, now, bytes(MASK_BYTES)),
        )

    def store(self, uplinks: Sequence[NewUplink], *, received_at: float) -> None:
        """Insert the batch's new uplinks, already handled (the handlers run in this batch);
        `touch` records when their devices were last heard."""
        self._bulk(
            "INSERT INTO uplinks (device_id, epoch, seq, kind, payload, digest, received_at, "
            "receipted_at, processed) SELECT v.device_id, v.epoch, v.seq, v.kind, v.payload, "
            "v.digest, v.received_at, v.received_at, 1 FROM {rows}",
            _UPLINK_COLUMNS,
            [(u.device_id, u.epoch, u.seq, u.kind, u.payload, u.digest, received_at)
             for u in uplinks],
        )  # fmt: skip

    def save_windows(self, windows: dict[WindowKey, ReplayWindow]) -> None:
        self._bulk(
            "UPDATE device_epochs SET window_highest = v.highest, window_mask = v.mask "
            "FROM {rows} WHERE device_epochs.device_id = v.device_id "
            "AND device_epochs.epoch = v.epoch",
            (("device_id", "text"), ("epoch", "text"), ("highest", "bigint"), ("mask", "bytea")),
            [(d, e, w.highest, w.mask.to_bytes(MASK_BYTES, "big"))
             for (d, e), w in sorted(windows.items())],
        )  # fmt: skip

    def active_alerts(
        self, device_ids: Sequence[str]
    ) -> Callable[[], dict[str, set[tuple[AlertKind, AlertState]]]]:
        """The (kind, state) of each device's active alerts, for all of `device_ids` at once;
        taken later."""
        if not device_ids:
            return dict
        among, params = self._in("device_id", device_ids)

        def parse(rows: list[Row]) -> dict[str, set[tuple[AlertKind, AlertState]]]:
            found: dict[str, set[tuple[AlertKind, AlertState]]] = {}
            for r in rows:
                found.setdefault(r["device_id"], set()).add(
                    (AlertKind(r["kind"]), AlertState(r["state"]))
                )
            return found

        return self._later(
            "SELECT DISTINCT device_id, kind, state FROM alerts "  # noqa: S608
            f"WHERE {among} AND state IN ('open', 'acknowledged')",
            params,
            parse,
        )

    def queue_receipts(self, receipts: Sequence[QueuedReceipt], *, now: float,
                       sent: bool) -> None:  # fmt: skip
        """Insert the batch's receipts; `sent`: already as sent, for this hub publishes them
        as soon as the batch commits (given back if the broker does not take them: `settle`).

        One write a receipt, not two. A crash between the commit and the publish leaves
        receipts that never left marked sent: the devices resend those uplinks (they do
        until they hear `stored`) and the duplicate is answered (`may_receipt`)."""
        at = now if sent else None
        self._bulk(
            "INSERT INTO downlinks (device_id, seq, kind, arg, created_at, epoch, digest, "
            "sent_at) SELECT v.device_id, v.seq, 'stored', v.arg, v.created_at, v.epoch, "
            "v.digest, v.sent_at FROM {rows}",
            _RECEIPT_COLUMNS,
            [(r.device_id, r.seq, r.arg, now, r.epoch, r.digest, at) for r in receipts],
        )  # fmt: skip

    def settle(self, marks: ReceiptMarks) -> None:
        """Give the receipts the broker did not take back to the timer's flush."""
        self._bulk(
            "UPDATE downlinks SET sent_at = NULL, claimed_until = NULL FROM {rows} "
            "WHERE downlinks.device_id = v.device_id AND downlinks.seq = v.seq",
            (("device_id", "text"), ("seq", "bigint")),
            [(r.device_id, r.seq) for r in marks.unsent],
        )
