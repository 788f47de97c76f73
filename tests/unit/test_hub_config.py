"""Hub config loading: a full example, defaults, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.errors import BadConfigValue, ConfigError, InsecureKeyFile, MissingConfigValue
from vigil.hub.config import load_config

FULL = """
[hub]
keys = "keys/hub.key"
silent_after = 300
[store]
url = "sqlite:///state/hub.db"
[mqtt]
host = "127.0.0.1"
port = 1883
client_id = "hub-1"
shared_group = "hub"
[broker]
device_host = "broker.example.org"
ca_file = "/etc/vigil/ca.pem"
[escalation]
retry_attempts = 3
[[escalation.tiers]]
name = "operators"
delay = 0
channels = ["operators"]
[[escalation.tiers]]
name = "nearby"
delay = 300
channels = ["nearby"]
radius_km = 5
[channels.operators]
urls = ["mailto://ops@127.0.0.1", "json://127.0.0.1:9/hook"]
[[channels.nearby.recipients]]
label = "Rosa"
url = "json://127.0.0.1:9/rosa"
lat = 17.0
lon = -96.7
[channels.public]
public = true
urls = ["json://127.0.0.1:9/public"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_full_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.keys_path == tmp_path / "keys" / "hub.key"
    assert cfg.store_url == f"sqlite:///{tmp_path / 'state' / 'hub.db'}"
    assert cfg.mqtt.port == 1883
    assert cfg.mqtt.shared_group == "hub"
    assert cfg.broker.device_host == "broker.example.org"
    assert [t.name for t in cfg.escalation.tiers] == ["operators", "nearby"]
    assert cfg.escalation.tiers[1].radius_km == 5.0
    assert cfg.channels["nearby"].recipients[0].lat == 17.0
    assert cfg.channels["public"].public
    assert cfg.silent_after == 300.0
    assert (cfg.limits.max_active_alerts, cfg.limits.notices_per_minute) == (5, 30)  # defaults
    limited = FULL.replace(
        "silent_after = 300",
        "silent_after = 300\n"
        "max_active_alerts_per_device = 2\nmax_notices_per_device_per_minute = 9",
    )
    cfg = load_config(write(tmp_path, limited))
    assert (cfg.limits.max_active_alerts, cfg.limits.notices_per_minute) == (2, 9)
    settings = cfg.mqtt.settings()
    assert (settings.host, settings.port, settings.client_id) == ("127.0.0.1", 1883, "hub-1")


@pytest.mark.parametrize(
    ("change", "error", "key"),
    [
        (("port = 1883", "port = 99999"), BadConfigValue, "mqtt.port"),
        (("port = 1883", 'port = "x"'), BadConfigValue, "mqtt.port"),
        (('keys = "keys/hub.key"', ""), MissingConfigValue, "hub.keys"),
        (('url = "sqlite:///state/hub.db"', 'url = "mysql://x"'), BadConfigValue, "store.url"),
        (
            (
                'url = "sqlite:///state/hub.db"',
                'url = "sqlite:///state/hub.db"\nreceipt_retention = 5',
            ),
            BadConfigValue,
            "store.receipt_retention must be a number >= 60",
        ),
        (
            (
                'url = "sqlite:///state/hub.db"',
                'url = "sqlite:///state/hub.db"\nreceipt_retention = "7d"',
            ),
            BadConfigValue,
            "store.receipt_retention",
        ),
        (('channels = ["nearby"]', 'channels = ["nope"]'), BadConfigValue, "escalation.tiers[1]"),
        (('channels = ["nearby"]', 'channels = ["public"]'), BadConfigValue, "public"),
        (("delay = 300", "delay = -1"), BadConfigValue, "escalation.tiers[1].delay must be"),
        (('channels = ["nearby"]', "channels = []"), BadConfigValue, "tiers[1].channels is empty"),
        (("delay = 300", "delay = nan"), BadConfigValue, "tiers[1].delay must be a number >= 0"),
        (("lat = 17.0", "lat = 91.0"), BadConfigValue, "nearby.recipients[0].lat must be"),
        (("port = 1883", "port = true"), BadConfigValue, "mqtt.port must be an integer 1-65535"),
        (('client_id = "hub-1"', 'client_id = "a\\u0000b"'), BadConfigValue, "mqtt.client_id"),
        (("silent_after = 300", "silent_after = 0"), BadConfigValue, "hub.silent_after"),
        (
            ("silent_after = 300", "silent_after = 300\nmax_active_alerts_per_device = 0"),
            BadConfigValue,
            "hub.max_active_alerts_per_device",
        ),
        (
            ("silent_after = 300", "silent_after = 300\nmax_notices_per_device_per_minute = 1.5"),
            BadConfigValue,
            "hub.max_notices_per_device_per_minute",
        ),
        (("retry_attempts = 3", "retry_attempts = 3.0"), BadConfigValue, "retry_attempts"),
        (("public = true", 'public = "yes"'), BadConfigValue, "channels.public.public"),
        (('name = "nearby"', "name = 5"), BadConfigValue, "tiers[1].name must be"),
        (("lat = 17.0", ""), BadConfigValue, "channels.nearby.recipients[0]"),
        (('shared_group = "hub"', 'shared_group = "a/b"'), BadConfigValue, "mqtt.shared_group"),
        (("[store]", "[store\n"), BadConfigValue, "TOML"),
    ],
)
def test_errors_name_key_and_file(
    tmp_path: Path, change: tuple[str, str], error: type[Exception], key: str
) -> None:
    path = write(tmp_path, FULL.replace(*change, 1))
    with pytest.raises(error) as info:
        load_config(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_missing_password_file_is_named(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL.replace("[broker]", 'password_file = "pw"\n[broker]')))
    with pytest.raises(ConfigError, match="password_file"):
        cfg.mqtt.settings()


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL.replace("[broker]", 'password_file = "pw"\n[broker]')))
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "pw").chmod(0o644)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        cfg.mqtt.settings()
    (tmp_path / "pw").chmod(0o600)
    assert cfg.mqtt.settings().password == "secret"


def test_shipped_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "vigil" / "hub" / "hub.example.toml"
    cfg = load_config(example)
    assert [t.name for t in cfg.escalation.tiers] == ["operators", "partners", "nearby responders"]
    assert cfg.channels["public"].public
    assert cfg.channels["operators"].recipients[0].label == "operators #1 (mailtos)"


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("[escalation]", "[escalaton]", "escalaton"),  # escalation silently off: never
        ("[broker]", "hots = 'x'\n[broker]", r"mqtt\.hots \(a typo\? did you mean mqtt\.host\?"),
        ("[escalation]", "[escalaton]", r"\[escalaton\] \(a typo\? did you mean escalation\?"),
    ],
)
def test_unknown_keys_are_typos_named_with_their_place(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    assert old in FULL
    with pytest.raises(BadConfigValue, match=f"unknown (key|table) .*{key}"):
        load_config(write(tmp_path, FULL.replace(old, new, 1)))


def test_unknown_key_inside_a_tier_is_named(tmp_path: Path) -> None:
    text = FULL.replace("[[escalation.tiers]]", "[[escalation.tiers]]\ndealy = 5", 1)
    with pytest.raises(BadConfigValue, match=r"escalation\.tiers\[0\]\.dealy"):
        load_config(write(tmp_path, text))


def test_tier_order_is_checked_on_the_tier_that_breaks_it(tmp_path: Path) -> None:
    with pytest.raises(BadConfigValue, match=r"escalation\.tiers\[1\]\.delay 30 is before"):
        load_config(write(tmp_path, FULL.replace("delay = 300", "delay = 30").replace(
            "delay = 0", "delay = 60")))  # fmt: skip


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("https://map/?{lat},{lon}&z={zoom}", "{zoom}; the allowed ones are {lat} and {lon}"),
        ("https://map/?{lat:.2f},{lon}", "{lat:.2f}; the allowed ones"),
        ("https://map/?{lat!r},{lon}", "{lat!r}; the allowed ones"),
        ("https://map/?{},{lon}", "{}; the allowed ones"),
        ("https://map/?{lat.real},{lon}", "{lat.real}; the allowed ones"),
        ("https://map/?{lat},{lon", "is not a template"),
        ("https://map/?{lat}", "must contain {lat} and {lon}"),
    ],
)
def test_map_url_is_checked_at_load_as_the_delivery_formats_it(
    tmp_path: Path, template: str, problem: str
) -> None:
    text = FULL.replace("silent_after = 300", f"silent_after = 300\nmap_url = {template!r}")
    with pytest.raises(BadConfigValue) as info:
        load_config(write(tmp_path, text))
    assert f"hub.map_url has the placeholder {problem}" in str(info.value) or (
        f"hub.map_url {problem}" in str(info.value)
    )


def test_a_good_map_url_formats_like_the_delivery(tmp_path: Path) -> None:
    text = FULL.replace("silent_after = 300", "silent_after = 300\nmap_url = 'geo:{lat},{lon}'")
    cfg = load_config(write(tmp_path, text))
    assert cfg.map_url.format(lat="1.000000", lon="2.000000") == "geo:1.000000,2.000000"


def test_receipt_retention_defaults_to_a_week_and_is_read(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, FULL)).receipt_retention == 7 * 86400
    day = FULL.replace('url = "sqlite:///state/hub.db"',
                       'url = "sqlite:///state/hub.db"\nreceipt_retention = 86400')  # fmt: skip
    assert load_config(write(tmp_path, day)).receipt_retention == 86400
