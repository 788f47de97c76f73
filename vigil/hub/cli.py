"""`vigil-hub`: run the hub, and the operator's commands against the same store."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vigil.errors import KeyFileError, StorageError, VigilError
from vigil.hub import alerts as alert_rules
from vigil.hub import audit, checkpoints, operator, process, tail, views
from vigil.hub.config import HubConfig, load_config
from vigil.hub.store import AuditEntry, Store, open_store
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys, HubKeys

DEFAULT_CONFIG = Path(os.environ.get("VIGIL_HUB_CONFIG", "/etc/vigil/hub.toml"))

EPILOG = """examples:
  vigil-hub init --config /etc/vigil/hub.toml      # create the store (once, as the hub's user)
  vigil-hub run --config /etc/vigil/hub.toml       # the service (systemd runs this)
  vigil-hub tail                                   # live decoded traffic and alerts
  vigil-hub alerts                                 # active alerts (--all for history)
  vigil-hub ack 12 --by rosa                       # take alert 12: escalation stops,
                                                   #   the wearer feels "help is coming"
  vigil-hub resolve 12 --note "safe at home"       # or: false-alarm 12
  vigil-hub verify 12 && vigil-hub broadcast 12    # public broadcast, only if verified
  vigil-hub devices                                # last seen, battery, last fix age
  vigil-hub enroll --device-id 3f.. --label "A. (Oaxaca)" --signing ed25519:.. --kem x25519:..
  vigil-hub revoke 3f2a...                         # a seized device: refuse its messages
  vigil-hub risk 3f2a... --hours 6                 # a dangerous trip: silence = alarm
  vigil-hub audit verify                           # detect edited, deleted or wiped entries
  vigil-hub audit anchor --out /media/usb/anchors  # keep a signed head outside the hub
  vigil-hub audit verify --anchor anchors --public-key hub.pub   # on another machine
  vigil-hub keygen --out /var/lib/vigil-hub/hub.key

The config file defaults to $VIGIL_HUB_CONFIG or /etc/vigil/hub.toml. Times show as
ISO 8601 in the local zone (set TZ to choose another), or in UTC with --utc."""


_UTC_HELP = "show times in UTC (default: the local zone, or the zone TZ names)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigil-hub",
        description="Vigil hub: receives wearables' alarms, stores and acknowledges them, "
        "and escalates them to responders.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="hub config TOML")
    p.add_argument("--utc", action="store_true", help=_UTC_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --config and --utc are accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="hub config TOML")
    common.add_argument("--utc", action="store_true", default=argparse.SUPPRESS, help=_UTC_HELP)
    sub.add_parser(
        "init", parents=[common], help="create the store and bring its schema up to date"
    )
    run = sub.add_parser("run", parents=[common], help="run the hub service")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    run.add_argument(
        "--create", action="store_true", help="create the store if missing (as 'init' does)"
    )
    t = sub.add_parser("tail", parents=[common], help="live decoded stream of traffic and alerts")
    t.add_argument("--once", action="store_true", help="print what is there and exit")
    t.add_argument("--colour", "--color", choices=["auto", "always", "never"], default="auto")
    sub.add_parser(
        "devices", parents=[common], help="enrolled devices: state, last heard, battery, last fix"
    )
    a = sub.add_parser("alerts", parents=[common], help="active alerts")
    a.add_argument("--all", action="store_true", help="include closed alerts")
    a.add_argument("--id", type=int, help="show one alert with its positions and deliveries")
    _add_actions(sub, common)
    _add_registry(sub, common)
    return p


def _add_actions(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The operator's actions on one alert."""
    for name, text in (
        ("ack", "take an alert: stops escalation, tells the wearer"),
        ("resolve", "close an alert: help arrived"),
        ("false-alarm", "close an alert as a false alarm"),
        ("verify", "confirm an acknowledged alert is real (allows broadcast)"),
        ("broadcast", "send a verified alert to the public channels"),
    ):
        s = sub.add_parser(name, parents=[common], help=text)
        s.add_argument("alert", type=int, help="alert number (see `vigil-hub alerts`)")
        s.add_argument("--by", default=_user(), help="operator name for the audit log")
        s.add_argument("--note", help="a note kept with the alert")


def _add_registry(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The device registry, the audit log, counters and the hub's keys."""
    e = sub.add_parser("enroll", parents=[common], help="add a device to the registry")
    e.add_argument("--device-id", required=True)
    e.add_argument("--label", required=True, help="owner label responders will see")
    e.add_argument("--signing", required=True, help="device signing key, ed25519:<base64>")
    e.add_argument("--kem", required=True, help="device KEM key, x25519:<base64>")
    e.add_argument("--hybrid-kem", help="device hybrid KEM key, mlkem768x25519:<base64> "
                   "(downlinks then use suite 2)")  # fmt: skip
    e.add_argument("--contact", action="append", default=[], help="Apprise URL (repeatable)")
    r = sub.add_parser("revoke", parents=[common], help="refuse a device's messages from now on")
    r.add_argument("device_id")
    w = sub.add_parser("risk", parents=[common], help="arm a risk window: silence inside it "
                       "is an alarm, at once (docs/protocol.md §8)")  # fmt: skip
    w.add_argument("device_id")
    span = w.add_mutually_exclusive_group(required=True)
    span.add_argument("--hours", type=_hours, help="how long the wearer is at risk from now")
    span.add_argument("--clear", action="store_true", help="end the risk window now")
    au = sub.add_parser("audit", parents=[common], help="audit log commands")
    au_sub = au.add_subparsers(dest="action", required=True, metavar="ACTION")
    au_sub.add_parser("show", parents=[common], help="list the audit log")
    av = au_sub.add_parser(
        "verify", parents=[common], help="check the chain, its signed checkpoints and anchors"
    )
    av.add_argument("--anchor", type=Path, action="append", default=[], metavar="FILE",
                    help="an anchor file to check against (repeatable; default: the "
                    "configured [audit] anchor_file)")  # fmt: skip
    av.add_argument("--public-key", type=Path, metavar="FILE",
                    help="the hub's public key as 'vigil-hub pubkey' prints it (default: "
                    "derived from the hub's key file)")  # fmt: skip
    aa = au_sub.add_parser("anchor", parents=[common], help="sign the head now and append "
                           "the signed head to FILE ('-' for standard output)")  # fmt: skip
    aa.add_argument("--out", required=True, metavar="FILE")
    sub.add_parser("stats", parents=[common], help="counts of stored and rejected input")
    k = sub.add_parser(
        "keygen", parents=[common], help="create the hub's key file (0600) and print public keys"
    )
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--force", action="store_true", help="replace an existing key file")
    sub.add_parser(
        "pubkey", parents=[common], help="print the hub's public keys as a device [hub] section"
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "operator"


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 refused or failed, 2 usage)."""
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    try:
        if args.command == "keygen":
            return _keygen(args, out)
        config = load_config(args.config)
        if args.command == "run":
            return _run(config, args.log_level, create=args.create)
        if args.command == "pubkey":
            return _pubkey(config, out)
        if args.command == "init":
            return _init(config, out)
        store = open_store(config.store_url)
        try:
            status = _COMMANDS[args.command](args, config, store, out)
            if status == 0 and args.command in _OPERATOR_ACTIONS:
                _sign_action(config, store)
            return status
        finally:
            store.close()
    except VigilError as exc:
        sys.stderr.write(f"vigil-hub: {exc}\n")
        return 1


def _init(config: HubConfig, out: TextIO) -> int:
    store = open_store(config.store_url, create=True)
    try:
        version = store.schema_version()
    finally:
        store.close()
    where = config.store_url if config.store_url.startswith("sqlite:") else "PostgreSQL"
    out.write(f"store ready: {where} (schema {version})\n")
    return 0


def _run(config: HubConfig, level: str, *, create: bool) -> int:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    process.run(config, stop=stop, create=create)
    return 0


def _keygen(args: argparse.Namespace, out: TextIO) -> int:
    keys = HubKeys.generate()
    keys.save(args.out, force=args.force)
    out.write(f"# hub keys written to {args.out} (mode 0600)\n")
    _print_public(keys, out)
    return 0


def _pubkey(config: HubConfig, out: TextIO) -> int:
    _print_public(HubKeys.load(config.keys_path), out)
    return 0


def _print_public(keys: HubKeys, out: TextIO) -> None:
    out.write("[hub]\n")
    for name, value in keys.public().to_text().items():
        out.write(f'{name} = "{value}"\n')


def _devices(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    now, clock = time.time(), views.Clock.choose(utc=args.utc)
    with store.read() as tx:
        devices = tx.devices.all()
        silent = views.silent_alerts(tx.alerts.all(active_only=True))
    rows = []
    for d in devices:
        state = views.device_state(d, silent_alert=silent.get(d.device_id.hex), now=now,
                                   silent_after=config.silent_after)  # fmt: skip
        fix_at = d.last_fix.taken_at if d.last_fix else None
        if d.gps_fix_at is not None:
            fix_at = max(d.gps_fix_at, fix_at or d.gps_fix_at)
        fix = "none" if fix_at is None else views.ago(now - fix_at)
        rows.append((d.device_id.hex, d.label, state, clock.at_ago(d.last_seen, now=now),
                     views.percent(d.battery), fix))  # fmt: skip
    columns = ["DEVICE", "LABEL", "STATE", "LAST HEARD", "BATTERY", "LAST FIX"]
    _write_lines(out, views.table([views.Column(c) for c in columns], rows))
    return 0


def _alerts(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    now, clock = time.time(), views.Clock.choose(utc=args.utc)
    if args.id is not None:
        return _show_alert(args.id, config, store, out, now=now, clock=clock)
    with store.read() as tx:
        devices = {d.device_id: d for d in tx.devices.all()}
        listed = tx.alerts.all(active_only=not args.all)
    rows = [(a.id, views.alert_state(a, devices.get(a.device_id)),
             devices[a.device_id].label if a.device_id in devices else a.device_id.hex[:8],
             a.trigger or "-", clock.at_ago(a.opened_at, now=now), a.acknowledged_by or "-")
            for a in listed]  # fmt: skip
    columns = [views.Column("ID", right=True), *(views.Column(c) for c in
               ("STATE", "WHO", "TRIGGER", "OPENED", "TAKEN BY"))]  # fmt: skip
    _write_lines(out, views.table(columns, rows))
    return 0


def _show_alert(
    alert_id: int, config: HubConfig, store: Store, out: TextIO, *, now: float, clock: views.Clock
) -> int:
    subject = f"alert {alert_id}"
    with store.read() as tx:
        alert = tx.alerts.get(alert_id)
        history = [e for e in tx.audit.entries()
                   if e.subject == subject and not e.action.startswith("delivery ")]  # fmt: skip
        deliveries = [(d, max((at for _, at, _, _ in tx.deliveries.attempts(d.id)), default=None))
                      for d in tx.deliveries.for_alert(alert_id)]  # fmt: skip
        file = views.AlertFile(alert, tx.devices.get(alert.device_id), history,
                               tx.alerts.positions(alert_id), deliveries)  # fmt: skip
    _write_lines(out, views.alert_detail(file, now=now, clock=clock, map_url=config.map_url))
    return 0


def _write_lines(out: TextIO, lines: list[str]) -> None:
    out.writelines(line + "\n" for line in lines)


def _act(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    alert = operator.act(store, args.alert, args.command, by=args.by, now=time.time(),
                         channels=config.channels, note=args.note)  # fmt: skip
    out.write(f"alert {alert.id}: {alert_rules.operator_view(alert)}"
              f"{' (broadcast queued)' if args.command == 'broadcast' else ''}\n")  # fmt: skip
    return 0


def _enroll(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    device_id = DeviceId.parse(args.device_id)
    keys = DevicePublicKeys.from_text(
        {"signing": args.signing, "kem": args.kem, "hybrid_kem": args.hybrid_kem}
    )
    now = time.time()
    with store.transaction() as tx:
        tx.devices.enroll(device_id, label=args.label, public_keys=keys, contacts=args.contact,
                          now=now)  # fmt: skip
        tx.audit.append(at=now, actor=_user(), action="enroll", subject=f"device {device_id}",
                        detail=args.label)  # fmt: skip
    out.write(f"enrolled {device_id} ({args.label})\n")
    return 0


def _hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}") from None
    if not 0 < hours <= 24 * 31:
        raise argparse.ArgumentTypeError("a risk window lasts more than 0 and at most 744 hours")
    return hours


def _risk(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    device_id = DeviceId.parse(args.device_id)
    now = time.time()
    until = None if args.clear else now + args.hours * 3600
    with store.transaction() as tx:
        tx.devices.set_risk(device_id, until=until)
        detail = "cleared" if until is None else f"until {_local(until)}"
        tx.audit.append(at=now, actor=_user(), action="risk window", subject=f"device {device_id}",
                        detail=detail)  # fmt: skip
    if until is None:
        out.write(f"risk window of {device_id} cleared\n")
    else:
        out.write(f"risk window of {device_id} armed for {args.hours:g} h: silence for "
                  f"{config.risk_silent_after:g} s raises an alarm\n")  # fmt: skip
    return 0


def _revoke(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    device_id = DeviceId.parse(args.device_id)
    now = time.time()
    with store.transaction() as tx:
        tx.devices.revoke(device_id, now=now)
        tx.audit.append(at=now, actor=_user(), action="revoke", subject=f"device {device_id}")
    out.write(f"revoked {device_id}: its messages are refused from now on\n")
    return 0


def _audit(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    if args.action == "anchor":
        return _audit_anchor(args, config, store, out)
    with store.read() as tx:
        entries, head = tx.audit.entries(), tx.audit.head()
    if args.action == "show":
        clock = views.Clock.choose(utc=args.utc)
        columns = [views.Column("ID", right=True), *(views.Column(c) for c in
                   ("TIME", "BY", "ACTION", "SUBJECT", "DETAIL"))]  # fmt: skip
        rows = [(e.id, clock.at(e.at), e.actor, e.action, e.subject, e.detail) for e in entries]
        _write_lines(out, views.table(columns, rows))
        return 0
    anchored, findings = _anchors(args.anchor, config, entries)
    needs_key = bool(anchored) or any(e.action == audit.CHECKPOINT for e in entries)
    key = _public_key(args.public_key, config, needed=needs_key)
    findings += audit.report(entries, head, key=key, anchored=anchored)
    for f in findings:
        out.write(f"{f}\n")
    problems = sum(not f.ok for f in findings)
    out.write(f"audit log: {len(entries)} entries, "
              f"{'intact' if not problems else f'{problems} problem(s)'}\n")  # fmt: skip
    return 1 if problems else 0


def _anchors(
    given: list[Path], config: HubConfig, entries: list[AuditEntry]
) -> tuple[list[audit.Anchor], list[audit.Finding]]:
    """Anchors from --anchor files, else from the configured anchor file if it exists."""
    default = config.audit.anchor_file
    if given or default is None:
        return checkpoints.read_anchor_files(given)
    if default.exists():
        return checkpoints.read_anchor_files([default])
    signed = sum(e.action == audit.CHECKPOINT for e in entries)
    if signed:
        why = (f"{default}: missing, though the log holds {signed} checkpoint(s): restore it "
               "from your copy, or pass --anchor FILE")  # fmt: skip
        return [], [audit.Finding(False, "ANCHOR FAILED", why)]
    return [], [audit.Finding(True, "NO ANCHOR", f"{default} does not exist yet")]


def _public_key(path: Path | None, config: HubConfig, *, needed: bool) -> Ed25519PublicKey | None:
    if path is not None:
        return checkpoints.read_public_key(path)
    try:
        return HubKeys.load(config.keys_path).signing.public_key()
    except (VigilError, OSError) as exc:
        if not needed:
            return None
        raise KeyFileError(f"cannot check the audit signatures: {exc}; on a machine without "
                           "the hub's key pass --public-key FILE ('vigil-hub pubkey' "
                           "prints it)") from exc  # fmt: skip


def _audit_anchor(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    keys = HubKeys.load(config.keys_path)
    done = checkpoints.checkpoint(store, keys.signing, now=time.time(),
                                  anchor_file=config.audit.anchor_file)  # fmt: skip
    if done is None:
        sys.stderr.write("vigil-hub: the audit log is empty: nothing to anchor\n")
        return 1
    if args.out == "-":
        out.write(done.signed.to_line() + "\n")
    else:
        checkpoints.append_anchor(Path(args.out), done.signed)
        out.write(f"anchored entries 1..{done.signed.entry_id} in {args.out}\n")
    return 0


def _sign_action(config: HubConfig, store: Store) -> None:
    """Sign the head after an operator action; if this user cannot, the running hub will."""
    try:
        keys = HubKeys.load(config.keys_path)
        checkpoints.checkpoint(store, keys.signing, now=time.time(),
                               anchor_file=config.audit.anchor_file)  # fmt: skip
    except StorageError as exc:  # signed, but the anchor file or the store failed
        sys.stderr.write(f"vigil-hub: note: {exc}\n")
    except (VigilError, OSError) as exc:
        within = config.audit.checkpoints.interval
        sys.stderr.write(f"vigil-hub: note: this action is logged but not yet signed ({exc}); "
                         f"the running hub signs it within {within:g} s\n")  # fmt: skip


def _stats(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    with store.read() as tx:
        stored, rejections = tx.uplinks.count(), tx.rejections.totals()
        failed, newest_failed = tx.uplinks.count(failed=True), tx.uplinks.failed(limit=5)
        hubs = tx.hubs.all()
    out.write(f"stored uplinks: {stored}\n")
    out.write(f"failed uplinks: {failed} (stored and receipted; their handling raised)\n")
    for u in newest_failed:
        out.write(f"  device {u.device_id} seq {u.seq} {u.kind} at {_local(u.received_at)}: "
                  f"{u.error}\n")  # fmt: skip
    for reason, count in rejections.items():
        out.write(f"rejected {reason}: {count}\n")
    if not hubs:
        out.write("hub: has not run on this store yet\n")
    for instance, status, at in hubs:
        out.write(f"hub {instance}: {status} (reported {_ago(time.time() - at)})\n")
    return 0


def _local(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _ago(seconds: float) -> str:
    """'12 s ago', with a warning when the report is older than a running hub would leave it."""
    if seconds > 3 * process.REPORT_EVERY:
        return f"{seconds:.0f} s ago: not running, or cannot write to the store"
    return f"{max(0.0, seconds):.0f} s ago"


def _tail(args: argparse.Namespace, config: HubConfig, store: Store, out: TextIO) -> int:
    colour = args.colour == "always" or (args.colour == "auto" and out.isatty())
    try:
        tail.follow(store, out, colour=colour, once=args.once,
                    clock=views.Clock.choose(utc=args.utc))  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C ends a live tail
        pass
    except BrokenPipeError:  # `vigil-hub tail | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error at exit
    return 0


_OPERATOR_ACTIONS = frozenset({"ack", "resolve", "false-alarm", "verify", "broadcast",
                               "enroll", "revoke", "risk"})  # fmt: skip
_COMMANDS = {
    "devices": _devices,
    "alerts": _alerts,
    "ack": _act,
    "resolve": _act,
    "false-alarm": _act,
    "verify": _act,
    "broadcast": _act,
    "enroll": _enroll,
    "revoke": _revoke,
    "risk": _risk,
    "audit": _audit,
    "stats": _stats,
    "tail": _tail,
}


if __name__ == "__main__":
    sys.exit(main())
