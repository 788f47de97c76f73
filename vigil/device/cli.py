"""`vigil-device`: run the wearable daemon, or simulate it on mock pins with a replayed GPS track.

Parses arguments and wires objects; the logic lives in vigil.device.core and
vigil.device.daemon, the parts in vigil.device.hardware. `run` and `simulate`
are one code path: they differ only in the hardware factory they ask for.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from vigil.device.config import BACKEND_ENV, DeviceConfig, load_config
from vigil.device.daemon import Daemon, mqtt_settings
from vigil.device.drivers.gps import GpsReader
from vigil.device.hardware import Hardware, open_hardware
from vigil.device.outbox import Outbox, check_state_dir
from vigil.errors import ConfigError, GpsError, HardwareError, VigilError
from vigil.runtime.mqtt import MqttClient
from vigil.wire.keys import DeviceKeys
from vigil.wire.topics import down_topic

_LOG = logging.getLogger("device")

EX_CONFIG = 78  # sysexits: fix the setup (config, keys, state folder, hardware backend)
EX_RUNTIME = 1

EPILOG = f"""\
examples:
  vigil-device check --config /etc/vigil/device.toml
  vigil-device run --config /etc/vigil/device.toml
  vigil-device simulate --config demo-run/device/device.toml \\
      --nmea vigil/device/captures/gpsd-mt3339.log
    (`make demo` writes that config; the capture ships with Vigil)

hardware: `run` uses the config's [hardware] backend, "pi" (the default) or
"simulate"; the environment variable {BACKEND_ENV} overrides it. `simulate` always
uses the simulated parts: mock pins driven from stdin, the --nmea capture
replayed as the GPS, a fixed battery level.

simulate reads commands on stdin, one per line:
  hold [s]   press and hold the panic button (default: the configured hold + 0.5 s)
  tap        one short press          gesture ..-   press out a gesture (. short, - long)
  press      button down              release       button up
  cut        open the tamper loop     wear          close the tamper loop
  quit       stop
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil-device",
        description="The Vigil wearable: panic button, tamper loop, GPS, encrypted MQTT uplink.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the daemon on real hardware (under systemd)"),
        ("simulate", "run the same daemon on mock pins, driven from stdin"),
        ("check", "validate the config and keys, then exit"),
    ):
        cmd = sub.add_parser(name, help=text, description=text, epilog=EPILOG)
        cmd.formatter_class = argparse.RawDescriptionHelpFormatter
        cmd.add_argument("--config", type=Path, required=True, help="device TOML file")
    sim = sub.choices["simulate"]
    sim.add_argument("--nmea", type=Path, help="NMEA capture to replay as the GPS, in a loop")
    sim.add_argument("--nmea-rate", type=float, default=10.0, help="lines per second")
    sim.add_argument("--not-worn", action="store_true", help="start with the tamper loop open")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:  # config, keys and state folder first: nothing touches hardware before they are good
        cfg = load_config(args.config)
        keys = DeviceKeys.load(cfg.keys_path)
        cfg.mqtt_password()
        _state_dir(cfg, create=args.command != "check")
    except ConfigError as exc:
        return _refuse(exc)
    if args.command == "check":
        print(f"{args.config}: OK, device {cfg.device_id}")  # noqa: T201
        return 0
    try:
        hardware = _hardware(cfg, args)
    except (ConfigError, GpsError, HardwareError) as exc:
        return _refuse(exc)
    try:
        return _serve(cfg, keys, hardware)
    except VigilError as exc:
        _LOG.error("vigil-device stopped: %s: %s", type(exc).__name__, exc)
        return EX_RUNTIME


def _refuse(exc: VigilError) -> int:
    print(f"vigil-device: {exc}", file=sys.stderr)  # noqa: T201 - the user's one error line
    return EX_CONFIG


def _state_dir(cfg: DeviceConfig, *, create: bool) -> None:
    try:
        check_state_dir(cfg.state_dir, create=create)
    except ConfigError as exc:
        raise type(exc)(f"{cfg.path}: device.state_dir: {exc}") from exc


def _hardware(cfg: DeviceConfig, args: argparse.Namespace) -> Hardware:
    if args.command == "simulate":
        options = {"nmea": args.nmea, "nmea_rate": args.nmea_rate, "worn": not args.not_worn}
        return open_hardware(cfg, "simulate", **options)
    return open_hardware(cfg)


def _serve(cfg: DeviceConfig, keys: DeviceKeys, hardware: Hardware) -> int:
    """Wire the daemon to the hardware factory's parts and run it until a signal or `quit`."""
    with ExitStack() as stack:
        stack.callback(hardware.close)  # registered first: closed last, after its devices
        feedback = hardware.feedback()
        stack.callback(feedback.close)
        outbox = Outbox.open(
            cfg.state_dir / "outbox.sqlite3",
            capacity=cfg.outbox.capacity,
            retry_initial=cfg.outbox.retry_initial,
            retry_max=cfg.outbox.retry_max,
        )
        stack.callback(outbox.close)
        daemon = Daemon(
            cfg,
            keys=keys,
            outbox=outbox,
            feedback=feedback,
            clock=hardware.clock,
            wall=hardware.wall,
            ntp_flag=hardware.ntp_flag,
            battery=hardware.battery,
            link_quality=hardware.link_quality,
            notify=hardware.notify,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _stopper(daemon))
        _start(daemon, hardware, stack)
        daemon.run()
    return 0


def _stopper(daemon: Daemon) -> Callable[[int, FrameType | None], None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        _LOG.info("signal %s: stopping", signum)
        daemon.stop()

    return stop


def _start(daemon: Daemon, hardware: Hardware, stack: ExitStack) -> None:
    """Start pins, GPS and MQTT, in the order systemd's READY promises."""
    inputs = hardware.inputs(on_event=daemon.post)
    stack.callback(inputs.close)
    for event in inputs.initial_events():
        daemon.post(event)
    port = hardware.gps_port()
    if port is not None:
        reader = GpsReader(port, on_fix=daemon.on_fix, clock=hardware.clock)
        reader.start()
        stack.callback(reader.stop)
    client = MqttClient(
        mqtt_settings(daemon.cfg),
        on_message=daemon.on_message,
        subscriptions=[down_topic(daemon.cfg.device_id)],
        on_connection=daemon.on_connection,
    )
    daemon.attach(client)
    client.start()
    stack.callback(client.stop)
    hardware.start(on_quit=daemon.stop)
    stack.callback(hardware.stop)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
