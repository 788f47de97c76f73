"""`vigil-provision`: what a technician runs to set up a broker and enrol wearables.

Parses arguments and calls the modules that do the work; nothing else.

Each subcommand is one `register(subparsers)` function below, listed in
`COMMANDS`: it adds its parser and sets `run`, a function from the parsed
arguments to the one-line summary printed on success. To add a subcommand,
write such a function and append it to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vigil.errors import ConfigError, RevokeIncomplete, VigilError
from vigil.provision import broker, certs, enrol, revoke, sdimage

EPILOG = """examples:
  vigil-provision broker-certs --out /etc/vigil/broker --host broker.example.org
  vigil-provision broker-config --out /etc/mosquitto/vigil --certs /etc/vigil/broker
  vigil-provision device --label "A. (Oaxaca)" --hub-config /etc/vigil/hub.toml --out wearable-01
  vigil-provision sd-image --image 2025-11-24-raspios-trixie-arm64-lite.img \\
      --device wearable-01 --wheels dist/pi-wheels --wifi-ssid Office --wifi-psk-file psk.txt
  vigil-provision revoke 3f2a...e9 --hub-config /etc/vigil/hub.toml \\
      --broker-pid-file /run/mosquitto/mosquitto.pid

Full walk-through: docs/technician.md"""


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, got {text!r}")
    return int(text)


def register_broker_certs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`broker-certs`: a CA and the broker's TLS certificate."""
    c = sub.add_parser("broker-certs", help="make a CA and the broker's TLS certificate")
    c.add_argument("--out", type=Path, required=True, help="folder for ca.pem, server.pem, keys")
    c.add_argument("--host", required=True, help="the broker's host name, as devices dial it")
    once = c.add_mutually_exclusive_group()
    once.add_argument(
        "--renew-server", action="store_true",
        help="new server certificate from the existing CA (devices keep working)",
    )  # fmt: skip
    once.add_argument(
        "--force", action="store_true", help="replace the CA (every device needs the new one)"
    )
    c.set_defaults(run=_run_broker_certs)


def _run_broker_certs(args: argparse.Namespace) -> str:
    if args.renew_server:
        made = certs.renew_server_cert(args.out, host=args.host)
        return f"server {made.server} renewed from CA {made.ca}; reload mosquitto"
    made = certs.make_broker_certs(args.out, host=args.host, force=args.force)
    return f"CA {made.ca} (give it to devices), server {made.server}"


def register_broker_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`broker-config`: the locked-down mosquitto config, ACL and password file."""
    b = sub.add_parser("broker-config", help="render the locked-down mosquitto config")
    b.add_argument(
        "--out", type=Path, required=True, help="folder for mosquitto.conf, acl, passwd"
    )
    b.add_argument("--certs", type=Path, required=True, help="folder made by broker-certs")
    b.add_argument("--port", type=_port, default=8883, help="TLS port (default 8883)")
    b.add_argument("--bind", default="0.0.0.0", help="listen address (default all)")  # noqa: S104
    b.add_argument("--hub-user", default=broker.HUB_USER, help="the hub's MQTT username")
    b.add_argument(
        "--more-hub-user", action="append", default=[], metavar="USER",
        help="a further hub instance's username (repeatable): the broker makes each client "
        "id its username, so two hubs cannot share one",
    )  # fmt: skip
    b.add_argument("--run-as", default="mosquitto", help="user mosquitto runs as (reads files)")
    b.add_argument(
        "--pid-file", type=Path, default=broker.PID_FILE,
        help=f"mosquitto's pid file, for 'revoke --broker-pid-file' (default {broker.PID_FILE})",
    )  # fmt: skip
    b.set_defaults(run=_run_broker_config)


def _run_broker_config(args: argparse.Namespace) -> str:
    files = broker.render_broker_config(
        args.out, certs=certs.BrokerCerts.in_dir(args.certs), port=args.port,
        bind=args.bind, hub_user=args.hub_user, run_as=args.run_as, pid_file=args.pid_file,
        more_hub_users=args.more_hub_user,
    )  # fmt: skip
    hub_passwords = ", ".join(str(p) for p in (files.hub_password, *files.more_hub_passwords))
    return (
        f"mosquitto -c {files.conf}; systemd drop-in {files.dropin}; "
        f"hub passwords in {hub_passwords}"
    )


def register_device(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`device`: a wearable's keys, id, broker password and config; enrolled at the hub."""
    d = sub.add_parser("device", help="create a wearable's keys, credentials and config; enrol it")
    d.add_argument("--label", required=True, help="owner label responders will see")
    d.add_argument("--hub-config", type=Path, required=True, help="the hub's TOML config")
    d.add_argument("--out", type=Path, required=True, help="folder for the device's files")
    d.add_argument("--contact", action="append", default=[], help="Apprise URL (repeatable)")
    d.add_argument(
        "--suite", choices=sorted(enrol.SUITES), default=enrol.DEFAULT_SUITE,
        help="post-quantum hybrid ML-KEM-768 + X25519 both ways (default; 1668-byte "
        "envelopes) or x25519 (580 bytes); see docs/technician.md for the cost",
    )  # fmt: skip
    d.add_argument("--force", action="store_true", help="replace existing keys with new ones")
    d.add_argument(
        "--broker-pid-file", type=Path, help="mosquitto's pid file: reload it to admit the device"
    )
    d.set_defaults(run=_run_device)


def _run_device(args: argparse.Namespace) -> str:
    return enrol.provision_device(
        label=args.label, hub_config=args.hub_config, out=args.out,
        contacts=args.contact, suite=args.suite, force=args.force,
        broker_pid_file=args.broker_pid_file,
    )  # fmt: skip


def register_revoke(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`revoke`: revoke at the hub, remove the broker password, reload the broker."""
    r = sub.add_parser("revoke", help="revoke a device at the hub, then remove its broker access")
    r.add_argument("device_id")
    r.add_argument("--hub-config", type=Path, required=True)
    r.add_argument(
        "--broker-pid-file", type=Path, help="mosquitto's pid file: reload it, dropping the device"
    )
    r.set_defaults(run=_run_revoke)


def _run_revoke(args: argparse.Namespace) -> str:
    """Print each step's state on its own line; fail if any step failed, saying what is left."""
    done = revoke.revoke_device(
        args.device_id, hub_config=args.hub_config, broker_pid_file=args.broker_pid_file
    )
    for step in done.steps:
        print(step)  # noqa: T201 - one line per step, for the operator
    left = "; ".join(done.left_to_do())
    if not done.complete:
        raise RevokeIncomplete(f"revoke of {done.device_id} is incomplete; left to do: {left}")
    return f"revoked {done.device_id}" + (f"; left to do: {left}" if left else "")


# --- sd-image (lives here so vigil.provision.sdimage stays pure) ---
def register_sd_image(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`sd-image`: put a provisioned device onto a stock Raspberry Pi OS image."""
    i = sub.add_parser("sd-image", help="prepare a stock Raspberry Pi OS image for a device")
    i.add_argument("--image", type=Path, required=True, help="raspios .img (uncompressed)")
    i.add_argument("--device", type=Path, required=True, help="folder made by 'device'")
    i.add_argument("--wheels", type=Path, required=True, help="aarch64 wheels of vigil and deps")
    i.add_argument("--os", choices=["bookworm", "trixie"], help="default: detected")
    i.add_argument("--user", default="vigil-admin", help="admin login (no password; SSH key)")
    i.add_argument("--ssh-key-file", type=Path, help="public key for the admin login")
    i.add_argument("--wifi-ssid")
    i.add_argument("--wifi-psk-file", type=Path, help="file holding the Wi-Fi passphrase")
    i.add_argument("--wifi-country", default="GB", help="two-letter regulatory domain")
    i.set_defaults(run=_run_sd_image)


def _run_sd_image(args: argparse.Namespace) -> str:
    return sdimage.write_sd_image(
        args.image, device=args.device, wheels=args.wheels, release=args.os,
        first_boot=_first_boot(args),
    )  # fmt: skip


def _first_boot(args: argparse.Namespace) -> sdimage.FirstBoot:
    try:
        key = args.ssh_key_file.read_text().strip() if args.ssh_key_file else None
        psk = args.wifi_psk_file.read_text().strip() if args.wifi_psk_file else None
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    return sdimage.FirstBoot(user=args.user, ssh_key=key, wifi_ssid=args.wifi_ssid,
                             wifi_psk=psk, wifi_country=args.wifi_country)  # fmt: skip


# The subcommands, in the order `--help` lists them (and a technician runs them).
COMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    register_broker_certs,
    register_broker_config,
    register_device,
    register_sd_image,
    register_revoke,
)


def build_parser() -> argparse.ArgumentParser:
    """The `vigil-provision` parser with every subcommand in `COMMANDS`."""
    p = argparse.ArgumentParser(
        prog="vigil-provision",
        description="Provision Vigil: broker certificates and config, enrol and revoke devices.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(args.run(args))  # noqa: T201 - the command's one-line summary
    except VigilError as exc:
        sys.stderr.write(f"vigil-provision: {exc}\n")
        return 1
    except OSError as exc:  # a folder we may not write (not root?), a full disk
        advice = "; run it with sudo or write somewhere else" if exc.errno == errno.EACCES else ""
        sys.stderr.write(f"vigil-provision: {exc.filename or ''}: {exc.strerror or exc}{advice}\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
