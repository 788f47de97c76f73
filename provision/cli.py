"""`vigil-provision`: what a technician runs to set up a broker and enrol wearables.

Parses arguments and calls the modules that do the work; nothing else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from provision import broker, certs, enrol
from wire.errors import VigilError

EPILOG = """examples:
  vigil-provision broker-certs --out /etc/vigil/broker --host broker.example.org
  vigil-provision broker-config --out /etc/mosquitto/vigil --certs /etc/vigil/broker
  vigil-provision device --label "A. (Oaxaca)" --hub-config /etc/vigil/hub.toml --out wearable-01
  vigil-provision revoke 3f2a...e9 --hub-config /etc/vigil/hub.toml \\
      --broker-pid-file /run/mosquitto/mosquitto.pid

Full walk-through: docs/technician.md"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigil-provision",
        description="Provision Vigil: broker certificates and config, enrol and revoke devices.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("broker-certs", help="make a CA and the broker's TLS certificate")
    c.add_argument("--out", type=Path, required=True, help="folder for ca.pem, server.pem, keys")
    c.add_argument("--host", required=True, help="the broker's host name, as devices dial it")
    c.add_argument("--force", action="store_true", help="replace an existing CA")
    b = sub.add_parser("broker-config", help="render the locked-down mosquitto config")
    b.add_argument(
        "--out", type=Path, required=True, help="folder for mosquitto.conf, acl, passwd"
    )
    b.add_argument("--certs", type=Path, required=True, help="folder made by broker-certs")
    b.add_argument("--port", type=int, default=8883, help="TLS port (default 8883)")
    b.add_argument("--bind", default="0.0.0.0", help="listen address (default all)")  # noqa: S104
    b.add_argument("--hub-user", default=broker.HUB_USER, help="the hub's MQTT username")
    b.add_argument("--run-as", default="mosquitto", help="user mosquitto runs as (reads files)")
    d = sub.add_parser("device", help="create a wearable's keys, credentials and config; enrol it")
    d.add_argument("--label", required=True, help="owner label responders will see")
    d.add_argument("--hub-config", type=Path, required=True, help="the hub's TOML config")
    d.add_argument("--out", type=Path, required=True, help="folder for the device's files")
    d.add_argument("--contact", action="append", default=[], help="Apprise URL (repeatable)")
    d.add_argument("--suite", choices=sorted(enrol.SUITES), default="x25519")
    d.add_argument("--force", action="store_true", help="replace existing keys with new ones")
    r = sub.add_parser("revoke", help="remove a device's broker access; the hub refuses it")
    r.add_argument("device_id")
    r.add_argument("--hub-config", type=Path, required=True)
    r.add_argument(
        "--broker-pid-file", type=Path, help="mosquitto's pid file: reload it, dropping the device"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "broker-certs":
            made = certs.make_broker_certs(args.out, host=args.host, force=args.force)
            print(f"CA {made.ca} (give it to devices), server {made.server}")  # noqa: T201
        elif args.command == "broker-config":
            files = broker.render_broker_config(
                args.out, certs=certs.BrokerCerts.in_dir(args.certs), port=args.port,
                bind=args.bind, hub_user=args.hub_user, run_as=args.run_as,
            )  # fmt: skip
            print(f"mosquitto -c {files.conf}; hub password in {files.hub_password}")  # noqa: T201
        elif args.command == "device":
            print(enrol.provision_device(  # noqa: T201
                label=args.label, hub_config=args.hub_config, out=args.out,
                contacts=args.contact, suite=args.suite, force=args.force,
            ))  # fmt: skip
        else:
            print(enrol.revoke_device(  # noqa: T201
                args.device_id, hub_config=args.hub_config, broker_pid_file=args.broker_pid_file
            ))  # fmt: skip
    except VigilError as exc:
        sys.stderr.write(f"vigil-provision: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
