"""Real responder sinks on free loopback ports: an SMTP server (aiosmtpd) and a webhook receiver.

with smtp_sink() as smtp, webhook_sink() as hook:
    url = smtp.apprise_url("ops@vigil.test"), hook.url("/ops")
    ...
    wait_until(lambda: smtp.messages)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.broker import free_port


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain", "html"))
        return "" if part is None else str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class SmtpSink:
    """Collects every mail a client sends; `fail_next` makes the next N transactions fail.

    `stall()` makes it a slow server: each transaction then waits (without blocking
    the server's event loop) until `release()`; `stalled` is set once one is waiting.
    """

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Mail] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_post: Callable[[Post], None] | None = None  # told of each POST answered 200
    gate: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()  # open: not stalling

    def stall(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        if not self.gate.is_set():
            self.stalled.set()
            await asyncio.to_thread(self.gate.wait)
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return "451 try again later"
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 OK"

    def apprise_url(self, to: str, sender: str = "hub@vigil.test") -> str:
        """An Apprise mailto URL for plain SMTP to this sink."""
        return f"mailto://{self.host}:{self.port}?from={sender}&to={to}&mode=insecure"


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived (for latencies)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookSink:
    """Collects every POST; `fail_next` answers the next N with HTTP 500."""

    host: str = "127.0.0.1"
    port: int = 0
    posts: list[Post] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_post: Callable[[Post], None] | None = None  # told of each POST answered 200

    def url(self, path: str = "/hook") -> str:
        """An Apprise json:// URL posting to this sink."""
        return f"json://{self.host}:{self.port}{path}"


def _webhook_server(sink: WebhookSink) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            post = Post(self.path, dict(self.headers), body)
            with sink.lock:
                failing = sink.fail_next > 0
                if failing:
                    sink.fail_next -= 1
                else:
                    sink.posts.append(post)
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if not failing and sink.on_post is not None:
                sink.on_post(post)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@contextmanager
def webhook_sink() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    server = _webhook_server(sink)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def webhook_sink_process() -> Iterator[WebhookSink]:
    """A webhook sink in a process of its own: a responder's server is not the wearer's
    device, so a benchmark that runs the device in its own process must not make the
    device's interpreter serve the POSTs too. Each POST comes back over a pipe, with
    its arrival time on the machine's monotonic clock (the same in every process)."""
    sink = WebhookSink()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sinks"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    sink.port = int(proc.stdout.readline())

    def collect() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            post = json.loads(line)
            with sink.lock:
                sink.posts.append(Post(post["path"], post["headers"],
                                       post["body"].encode("latin-1"), post["at"]))  # fmt: skip

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        yield sink
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(timeout=5)


def _serve_webhook_on_stdout() -> None:
    """`python -m tests.support.sinks`: the port, then one JSON line per POST."""

    def report(post: Post) -> None:
        line = {"path": post.path, "headers": post.headers, "at": post.at,
                "body": post.body.decode("latin-1")}  # fmt: skip
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    sink = WebhookSink(on_post=report)
    server = _webhook_server(sink)
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    _serve_webhook_on_stdout()
