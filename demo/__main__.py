"""`make demo`: boot, fix, heartbeat, button held, alarm, email and webhook, receipts felt,
operator acknowledges and resolves, audit verified; then everything stops.

Real parts throughout: a mosquitto broker on a loopback port, `vigil-hub run`
and `vigil-device simulate` as separate processes (mock pins, a replayed GPS
capture), an SMTP server and a webhook receiver standing in for responders,
and the operator's `vigil-hub` commands. Files go to `demo-run/`.
"""

from __future__ import annotations

import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from demo.processes import Watched, run, wait_for
from demo.setup import DemoFiles, prepare
from tests.support.broker import running_mosquitto
from tests.support.sinks import SmtpSink, WebhookSink, smtp_sink, webhook_sink

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _START:5.1f}s] {text}", flush=True)  # noqa: T201


def hub_cli(files: DemoFiles, *args: str) -> str:
    return run([str(BIN / "vigil-hub"), "--config", str(files.hub_config), *args])


def main() -> int:
    work = ROOT / "demo-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    with ExitStack() as stack:
        broker = stack.enter_context(running_mosquitto(work / "broker"))
        smtp = stack.enter_context(smtp_sink())
        hook = stack.enter_context(webhook_sink())
        say(f"broker: mosquitto on {broker.host}:{broker.port}; responders: SMTP on "
            f":{smtp.port}, webhook on :{hook.port}")  # fmt: skip
        files = prepare(work, broker=broker, smtp=smtp, hook=hook)
        say(f"hub keys made, device {files.device_id} enrolled as {files.label!r}")
        hub = Watched("hub", [str(BIN / "vigil-hub"), "--config", str(files.hub_config), "run",
                             "--log-level", "DEBUG"],  # DEBUG: the story shows each heartbeat
                      log=work / "hub.log")  # fmt: skip
        stack.callback(hub.stop)
        device = Watched(
            "device",
            [str(BIN / "vigil-device"), "-v", "simulate", "--config", str(files.device_config),
             "--nmea", str(files.nmea), "--nmea-rate", "40"],
            log=work / "device.log",
            stdin=True,
        )  # fmt: skip
        stack.callback(device.stop)
        story(files, hub, device, smtp, hook)
    say("everything stopped; logs and databases are in demo-run/")
    return 0


def story(
    files: DemoFiles, hub: Watched, device: Watched, smtp: SmtpSink, hook: WebhookSink
) -> None:
    wait_for("the hub to connect", lambda: hub.seen("mqtt connected"), 20)
    say("1. hub is up and subscribed to vigil/v1/+/up")
    wait_for("the wearable to boot", lambda: device.seen("ready"), 20)
    wait_for("the wearable to connect", lambda: device.seen("mqtt connected"), 20)
    say("2. wearable booted on mock pins, connected over MQTT")
    wait_for("a GPS fix", lambda: device.seen("gps fix"), 30)
    say("3. GPS fix from the replayed capture (the track of a Raspberry Pi GPS HAT)")
    wait_for("a heartbeat at the hub", lambda: hub.seen("kind=heartbeat new"), 30)
    say("4. heartbeat stored by the hub: " + hub_cli(files, "devices").strip().splitlines()[-1])
    mark = device.mark()
    device.send("hold")
    say("5. the wearer holds the panic button")
    wait_for("the alarm to be raised", lambda: device.seen("[vibration] raised", mark), 15)
    say("   wearable vibrates once: alarm raised")
    wait_for("the hub's stored receipt", lambda: device.seen("[vibration] stored", mark), 20)
    say("6. hub stored the alarm; the wearer feels receipt A (stored)")
    wait_for("an email to the operators", lambda: smtp.messages, 30)
    mail = smtp.messages[0]
    say(f"7. email to {', '.join(mail.recipients)}: {mail.subject!r}")
    for line in mail.text.strip().splitlines()[:6]:
        say(f"     | {line}")
    wait_for("a webhook POST", lambda: hook.posts, 30)
    say(f"8. webhook POST {hook.posts[0].path}: {hook.posts[0].body[:120]!r}...")
    alert = _first_alert(files)
    hub_cli(files, "ack", alert, "--by", "demo-operator")
    say(f"9. operator acknowledges alert {alert}")
    wait_for("the acknowledged receipt", lambda: device.seen("[vibration] acknowledged", mark), 20)
    say("   the wearer feels receipt B (a human took it)")
    hub_cli(files, "resolve", alert, "--by", "demo-operator", "--note", "safe, demo over")
    say(f"10. operator resolves alert {alert}")
    wait_for("the device to hear it", lambda: device.seen("kind=resolved", mark), 20)
    for line in hub_cli(files, "alerts", "--all").rstrip().splitlines():
        say(f"     | {line}")
    *findings, summary = hub_cli(files, "audit", "verify").strip().splitlines()
    say(f"11. {summary}")
    say(f"     | {findings[-1]}")  # how much of it is anchored outside the database
    device.send("quit")


def _first_alert(files: DemoFiles) -> str:
    lines = hub_cli(files, "alerts").strip().splitlines()
    if len(lines) < 2:
        raise RuntimeError("the hub shows no alert")
    return lines[1].split()[0]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (TimeoutError, RuntimeError) as exc:
        say(f"demo failed: {exc} (see demo-run/*.log)")
        sys.exit(1)
