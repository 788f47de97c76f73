"""The shipped broker config, run by a real mosquitto: who may connect, publish, subscribe."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.locked_broker import LockedBroker, locked_broker, tls_client
from tests.support.wait import wait_until
from vigil.provision.broker import set_password
from vigil.provision.certs import make_broker_certs, renew_server_cert
from vigil.wire import DeviceId
from vigil.wire.topics import down_topic, up_topic

pytestmark = pytest.mark.integration

A, B = DeviceId.generate(), DeviceId.generate()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LockedBroker]:
    with locked_broker(tmp_path) as locked:
        set_password(locked.files.passwd, A.hex, "password-a")
        set_password(locked.files.passwd, B.hex, "password-b")
        locked.broker.restart()  # mosquitto reads the password file at start (or on SIGHUP)
        yield locked


def test_config_has_only_a_tls_listener_and_no_anonymous(broker: LockedBroker) -> None:
    conf = broker.files.conf.read_text()
    assert conf.count("\nlistener ") == 1
    assert "allow_anonymous false" in conf
    assert "certfile" in conf
    assert "keyfile" in conf
    dropin = broker.files.dropin.read_text()  # the packaged service runs this config only
    assert (
        f"ExecStart=\nExecStart=/usr/sbin/mosquitto -c {broker.files.conf.resolve()}\n" in dropin
    )


@pytest.mark.parametrize(("user", "password"), [(None, None), (A.hex, "wrong"), ("eve", "x")])
def test_unknown_or_wrong_credentials_are_refused(
    broker: LockedBroker, user: str | None, password: str | None
) -> None:
    with tls_client(broker, "intruder", user=user, password=password) as (client, seen):
        wait_until(lambda: seen.refusals, 10, what="a refused CONNACK")
        assert not client.connected
        assert "authori" in seen.refusals[0].lower()


def test_client_that_does_not_trust_our_ca_fails_tls(broker: LockedBroker, tmp_path: Path) -> None:
    other = make_broker_certs(tmp_path / "other-ca", host="broker.vigil.test")
    context = ssl.create_default_context(cafile=str(other.ca))
    with (
        socket.create_connection(("127.0.0.1", broker.broker.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    trusting = ssl.create_default_context(cafile=str(broker.certs.ca))
    with (
        socket.create_connection(("127.0.0.1", broker.broker.port), timeout=10) as raw,
        trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_plaintext_mqtt_gets_no_answer(broker: LockedBroker) -> None:
    connect = bytes.fromhex("100c00044d5154540402003c0000")  # MQTT 3.1.1 CONNECT, no TLS
    with socket.create_connection(("127.0.0.1", broker.broker.port), timeout=10) as raw:
        raw.sendall(connect)
        try:
            reply = raw.recv(16)
        except ConnectionResetError:
            reply = b""  # the TLS listener hangs up on a plaintext client
    assert not reply.startswith(b"\x20")  # never a CONNACK


def test_device_reaches_only_its_own_topics(broker: LockedBroker) -> None:
    hub_subs = ("$share/hub/vigil/v1/+/up",)
    with (
        tls_client(broker, "hub", user="vigil-hub", password=broker.hub_password,
                   subscriptions=hub_subs) as (hub, at_hub),
        tls_client(broker, A.hex, user=A.hex, password="password-a",
                   subscriptions=(down_topic(B), "#", down_topic(A))) as (dev_a, at_a),
    ):  # fmt: skip
        assert hub.wait_connected(10)
        assert dev_a.wait_connected(10)
        # A forges B's uplink, then sends its own (the positive control).
        dev_a.publish(up_topic(B), b"forged")
        wait_until(lambda: (dev_a.publish(up_topic(A), b"mine"), at_hub.got(up_topic(A)))[1], 10)
        assert not at_hub.got(up_topic(B))
        # The hub writes to B's and then A's downlink; A must see only its own.
        wait_until(lambda: (hub.publish(down_topic(B), b"for b"), hub.publish(down_topic(A), b"a"),
                            at_a.got(down_topic(A)))[2], 10)  # fmt: skip
        assert not at_a.got(down_topic(B))
        assert {t for t, _ in at_a.messages} == {down_topic(A)}


def test_device_cannot_write_downlinks_or_read_uplinks(broker: LockedBroker) -> None:
    with (
        tls_client(broker, "hub", user="vigil-hub", password=broker.hub_password,
                   subscriptions=(up_topic(A),)) as (hub, at_hub),
        tls_client(broker, B.hex, user=B.hex, password="password-b",
                   subscriptions=(up_topic(A), down_topic(B))) as (dev_b, at_b),
        tls_client(broker, A.hex, user=A.hex, password="password-a") as (dev_a, _),
    ):  # fmt: skip
        for client in (hub, dev_b, dev_a):
            assert client.wait_connected(10)
        dev_b.publish(down_topic(A), b"fake receipt")
        wait_until(lambda: (dev_a.publish(up_topic(A), b"x"), at_hub.got(up_topic(A)))[1], 10)
        wait_until(lambda: (hub.publish(down_topic(B), b"y"), at_b.got(down_topic(B)))[1], 10)
        assert not at_b.got(up_topic(A))


def mosquitto_pub(
    broker: LockedBroker, user: str, password: str, topic: str, *, message: str = "x",
    retain: bool = False,
) -> str:  # fmt: skip
    """Publish once at QoS 1 over MQTT 5 with mosquitto's own client; return its stderr."""
    result = subprocess.run(
        [require_tool("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(broker.broker.port),
         "-V", "5", "--cafile", str(broker.certs.ca), "-u", user, "-P", password,
         "-i", f"pub-{user}", "-q", "1", "-t", topic, "-m", message, *(["-r"] if retain else [])],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.stderr


def test_forged_publish_is_refused_in_the_puback(broker: LockedBroker) -> None:
    # mosquitto 2.0 answers a publish the ACL forbids with PUBACK reason 0x87 (not authorized);
    # a forbidden subscription, by contrast, is granted and then receives nothing (above).
    assert "Not authorized" in mosquitto_pub(broker, A.hex, "password-a", up_topic(B))
    assert "Not authorized" in mosquitto_pub(broker, A.hex, "password-a", down_topic(A))
    assert mosquitto_pub(broker, A.hex, "password-a", up_topic(A)) == ""  # the control
    hub = broker.hub_password
    assert "Not authorized" in mosquitto_pub(broker, "vigil-hub", hub, up_topic(A))
    assert mosquitto_pub(broker, "vigil-hub", hub, down_topic(A)) == ""


def test_a_device_cannot_take_over_another_devices_client_id(broker: LockedBroker) -> None:
    # MQTT drops the older connection of a client id when a new one logs in with it; A
    # must not be able to knock B off the broker (or into B's session) that way.
    with (
        tls_client(broker, "hub", user="vigil-hub", password=broker.hub_password) as (hub, _),
        tls_client(broker, B.hex, user=B.hex, password="password-b",
                   subscriptions=(down_topic(B),)) as (dev_b, at_b),
    ):  # fmt: skip
        assert hub.wait_connected(10)
        assert dev_b.wait_connected(10)
        with tls_client(broker, B.hex, user=A.hex, password="password-a") as (dev_a, _):
            assert dev_a.wait_connected(10)
            wait_until(lambda: (hub.publish(down_topic(B), b"b"), at_b.got(down_topic(B)))[1], 10)
            assert dev_a.connected
        assert not at_b.refusals  # B was never disconnected
        assert dev_b.connected


def test_two_hub_instances_share_the_uplinks_under_their_own_users(tmp_path: Path) -> None:
    with locked_broker(tmp_path, more_hub_users=("vigil-hub-2",)) as locked:
        set_password(locked.files.passwd, A.hex, "password-a")
        locked.broker.restart()
        second = locked.files.more_hub_passwords[0].read_text().strip()
        assert locked.files.more_hub_passwords[0].stat().st_mode & 0o777 == 0o600
        shared = ("$share/hub/vigil/v1/+/up",)
        with (
            tls_client(locked, "hub-1", user="vigil-hub", password=locked.hub_password,
                       subscriptions=shared) as (hub1, at1),
            tls_client(locked, "hub-2", user="vigil-hub-2", password=second,
                       subscriptions=shared) as (hub2, at2),
            tls_client(locked, A.hex, user=A.hex, password="password-a",
                       subscriptions=(down_topic(A),)) as (dev_a, at_a),
        ):  # fmt: skip
            for client in (hub1, hub2, dev_a):
                assert client.wait_connected(10)
            topic = up_topic(A)
            wait_until(lambda: (dev_a.publish(topic, b"up"), at1.got(topic) and at2.got(topic))[1],
                       10, what="both hubs to get a share of the uplinks")  # fmt: skip
            wait_until(lambda: (hub2.publish(down_topic(A), b"d"), at_a.got(down_topic(A)))[1], 10)
            assert hub1.connected
            assert hub2.connected
            assert not at1.refusals
            assert not at2.refusals


def test_a_renewed_server_certificate_is_trusted_by_devices_as_they_are(
    broker: LockedBroker,
) -> None:
    before = broker.certs.server.read_bytes()
    renew_server_cert(broker.certs.ca.parent, host="broker.vigil.test")
    assert broker.certs.server.read_bytes() != before
    broker.broker.restart()
    with tls_client(broker, A.hex, user=A.hex, password="password-a") as (dev_a, _):
        assert dev_a.wait_connected(10)  # with the ca.pem it was provisioned with


def test_a_device_cannot_plant_a_retained_uplink(broker: LockedBroker) -> None:
    # The broker's CONNACK says "retain not available"; whatever the client then sends,
    # nothing is kept for the next subscriber.
    mosquitto_pub(broker, A.hex, "password-a", up_topic(A), message="planted", retain=True)
    with (
        tls_client(broker, "hub", user="vigil-hub", password=broker.hub_password,
                   subscriptions=("vigil/v1/+/up",)) as (hub, at_hub),
        tls_client(broker, A.hex, user=A.hex, password="password-a") as (dev_a, _),
    ):  # fmt: skip
        assert hub.wait_connected(10)
        assert dev_a.wait_connected(10)
        wait_until(lambda: (dev_a.publish(up_topic(A), b"live"), at_hub.got(up_topic(A)))[1], 10)
        assert b"planted" not in {payload for _, payload in at_hub.messages}


def test_a_burst_waits_whole_in_an_offline_hub_session(tmp_path: Path) -> None:
    """1,500 uplinks while the hub is away all reach it when it returns (1000 dropped some)."""
    burst = 1500
    with locked_broker(tmp_path, more_hub_users=("vigil-probe",)) as locked:
        set_password(locked.files.passwd, A.hex, "password-a")
        locked.broker.restart()
        probe_password = locked.files.more_hub_passwords[0].read_text().strip()
        hub_login = {"user": "vigil-hub", "password": locked.hub_password}
        with tls_client(locked, "hub", **hub_login, subscriptions=("vigil/v1/+/up",)) as (hub, _):
            assert hub.wait_connected(10)  # its SUBSCRIBE goes before the DISCONNECT of stop()
        with (
            tls_client(locked, "probe", user="vigil-probe", password=probe_password,
                       subscriptions=("vigil/v1/+/up",)) as (probe, seen),
            tls_client(locked, A.hex, user=A.hex, password="password-a") as (device, _),
        ):  # fmt: skip
            assert probe.wait_connected(10)
            assert device.wait_connected(10)
            wait_until(lambda: (device.publish(up_topic(A), b"first"), seen.got(up_topic(A)))[1],
                       what="the probe's subscription")  # fmt: skip
            for i in range(burst):
                device.publish(up_topic(A), i.to_bytes(4, "big"))
            # The probe has them all: the broker has queued each one for the offline hub.
            wait_until(lambda: len(_numbers(seen.messages)) == burst, 30, what="the probe's burst")
        with tls_client(locked, "hub", **hub_login) as (hub, inbox):
            wait_until(lambda: len(_numbers(inbox.messages)) == burst, 30, what="the queued burst")
        assert _numbers(inbox.messages) == set(range(burst))


def _numbers(messages: list[tuple[str, bytes]]) -> set[int]:
    return {int.from_bytes(p, "big") for _, p in list(messages) if len(p) == 4}
