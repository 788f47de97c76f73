"""`vigil-device`: run the wearable daemon, or simulate it on mock pins with a replayed GPS track.

Parses arguments and wires objects; the logic lives in vigil.device.core and vigil.device.daemon.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import serial
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from vigil.device.config import DeviceConfig, load_config
from vigil.device.core import Pattern
from vigil.device.daemon import Daemon, mqtt_settings
from vigil.device.drivers.gps import GpsReader, SerialPort
from vigil.device.drivers.inputs import Feedback, Inputs
from vigil.device.outbox import Outbox
from vigil.device.simulate import NmeaReplay, command_loop
from vigil.errors import ConfigError, VigilError
from vigil.runtime.mqtt import MqttClient
from vigil.wire.keys import DeviceKeys
from vigil.wire.topics import down_topic

_LOG = logging.getLogger("device")

EX_CONFIG = 78  # sysexits: configuration error (systemd can refuse to restart on it)
EX_RUNTIME = 1

EPILOG = """\
examples:
  vigil-device run --config /etc/vigil/device.toml
  vigil-device simulate --config demo/device.toml \\
      --nmea vigil/device/captures/gpsd-mt3339.log
  vigil-device check --config /etc/vigil/device.toml

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
    try:  # config and keys first: nothing touches hardware before they are good
        cfg = load_config(args.config)
        keys = DeviceKeys.load(cfg.keys_path)
        cfg.mqtt_password()
    except ConfigError as exc:
        print(f"vigil-device: {exc}", file=sys.stderr)  # noqa: T201 - the user's one error line
        return EX_CONFIG
    if args.command == "check":
        print(f"{args.config}: OK, device {cfg.device_id}")  # noqa: T201
        return 0
    try:
        if args.command == "simulate":
            return _simulate(cfg, keys, args)
        return _run(cfg, keys)
    except VigilError as exc:
        _LOG.error("vigil-device stopped: %s: %s", type(exc).__name__, exc)
        return EX_RUNTIME


def _run(cfg: DeviceConfig, keys: DeviceKeys) -> int:
    def open_gps() -> SerialPort | None:
        try:
            port: SerialPort = serial.Serial(cfg.gps.port, cfg.gps.baud, timeout=0.5)
        except (serial.SerialException, OSError) as exc:
            _LOG.error("gps: cannot open %s (%s); alarms go out without a fix", cfg.gps.port, exc)
            return None
        return port

    with _stack(cfg, keys, Feedback(cfg.pins)) as (daemon, stack):
        inputs = Inputs(cfg.pins, on_event=daemon.post)
        stack.callback(inputs.close)
        _start(daemon, inputs.initial_events(), open_gps(), stack)
        daemon.run()
    return 0


@contextmanager
def _stack(
    cfg: DeviceConfig, keys: DeviceKeys, feedback: Any
) -> Iterator[tuple[Daemon, ExitStack]]:
    """Open the outbox and build the daemon; close everything on the way out."""
    with ExitStack() as stack:
        stack.callback(feedback.close)
        outbox = Outbox.open(
            cfg.state_dir / "outbox.sqlite3",
            capacity=cfg.outbox.capacity,
            retry_initial=cfg.outbox.retry_initial,
            retry_max=cfg.outbox.retry_max,
        )
        stack.callback(outbox.close)
        daemon = Daemon(cfg, keys=keys, outbox=outbox, feedback=feedback)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _stopper(daemon))
        yield daemon, stack


def _stopper(daemon: Daemon) -> Callable[[int, FrameType | None], None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        _LOG.info("signal %s: stopping", signum)
        daemon.stop_event.set()

    return stop


def _start(daemon: Daemon, initial: list[Any], port: SerialPort | None, stack: ExitStack) -> None:
    """Start GPS and MQTT after the pins, in the order systemd's READY promises."""
    for event in initial:
        daemon.post(event)
    if port is not None:
        reader = GpsReader(port, on_fix=daemon.on_fix)
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


# -- simulate -----------------------------------------------------------------------------


class _ShownFeedback:
    """Feedback on mock pins that also says on stdout what the wearer would feel."""

    def __init__(self, inner: Any, out: TextIO) -> None:
        self._inner, self._out = inner, out

    def play(self, pattern: Pattern) -> None:
        print(f"[vibration] {pattern.value}", file=self._out, flush=True)
        self._inner.play(pattern)

    def close(self) -> None:
        self._inner.close()


def _simulate(cfg: DeviceConfig, keys: DeviceKeys, args: argparse.Namespace) -> int:
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    feedback = _ShownFeedback(Feedback(cfg.pins, pin_factory=factory), sys.stdout)
    with _stack(cfg, keys, feedback) as (daemon, stack):
        inputs = Inputs(cfg.pins, on_event=daemon.post, pin_factory=factory)
        stack.callback(inputs.close)
        if not args.not_worn:
            factory.pin(cfg.pins.tamper).drive_low()
        port: SerialPort | None = None
        if args.nmea is not None:
            replay = NmeaReplay(args.nmea, rate=args.nmea_rate)
            port = replay.port
            replay.start()
            stack.callback(replay.stop)
        _start(daemon, inputs.initial_events(), port, stack)
        commands = threading.Thread(
            target=command_loop,
            args=(sys.stdin, factory, cfg, daemon.stop_event),
            name="simulate-stdin",
            daemon=True,
        )
        commands.start()
        daemon.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
