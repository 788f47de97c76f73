"""The one config reader: typed getters, typos, hostile values, garbage files, password files.

Whatever the bytes of a config file, loading it either works or raises one
`ConfigError` whose message is one line naming the file; never another exception.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.device_setup import make_device
from tests.unit.test_hub_config import FULL
from vigil.device.config import load_config as load_device
from vigil.errors import (
    BadConfigValue,
    ConfigError,
    InsecureKeyFile,
    KeyFileError,
    MissingConfigValue,
)
from vigil.hub.config import load_config as load_hub
from vigil.runtime.config import (
    MAX_CONFIG_BYTES,
    REQUIRED,
    MqttConfig,
    Table,
    load_toml,
    read_password_file,
)


def table(tmp_path: Path, text: str) -> Table:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return load_toml(path)


def test_errors_name_the_file_and_the_full_dotted_key(tmp_path: Path) -> None:
    mqtt = table(tmp_path, "[mqtt]\nport = 'x'\n").table("mqtt")
    with pytest.raises(BadConfigValue) as info:
        mqtt.integer("port", 8883, low=1, high=65535)
    assert (
        str(info.value) == f"{tmp_path / 't.toml'}: mqtt.port must be an integer 1-65535, got 'x'"
    )


def test_required_and_default(tmp_path: Path) -> None:
    t = table(tmp_path, "[a]\nx = 'v'\n").table("a")
    assert t.text("x") == "v"
    assert t.text("y", "dflt") == "dflt"
    assert t.text("z", None) is None
    with pytest.raises(MissingConfigValue, match=r"a\.w is required in \[a\]"):
        t.text("w", REQUIRED)


def test_unknown_keys_suggest_the_closest_known_one(tmp_path: Path) -> None:
    top = table(tmp_path, "[mqtt]\nhost = 'h'\nkeepalvie = 5\n")
    MqttConfig.read(top.table("mqtt"))
    with pytest.raises(BadConfigValue, match=r"unknown key mqtt\.keepalvie .*mqtt\.keepalive\?"):
        top.check_unknown()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('x = "a\\nb"', "must be one line of printable text, got 'a\\nb'"),
        ('x = "\\u0000"', "must be one line of printable text"),
        ('x = "   "', "must be one line of printable text"),
        ("x = 5", "must be one line of printable text, got 5"),
        (f'x = "{"A" * 500}\\n"', "got 'AAAA"),  # shortened, still one line
        ("x = [1]", "must be one line"),
        ("x = {a = 1}", "got a table"),
    ],
)
def test_hostile_strings_are_refused_on_one_line(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(BadConfigValue) as info:
        table(tmp_path, text).text("x")
    message = str(info.value)
    assert problem in message
    assert "\n" not in message
    assert len(message) < 200 + len(str(tmp_path))


@pytest.mark.parametrize(
    "value",
    ["nan", "inf", "-inf", "true", "'1'", "1e400", "-1", "0x" + "f" * 4000, "[1.0]"],
)
def test_hostile_numbers_are_refused(tmp_path: Path, value: str) -> None:
    t = table(tmp_path, f"x = {value}\n")
    with pytest.raises(BadConfigValue, match=r"x must be") as info:
        t.number("x", 1.0, low=0)
    assert len(str(info.value)) < 200 + len(str(tmp_path))
    with pytest.raises(BadConfigValue, match=r"x must be an integer"):
        t.integer("x", 1, low=0, high=10)


def test_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    t = table(tmp_path, "a = 'rel/f'\nb = '/abs/f'\n")
    assert t.path("a") == tmp_path / "rel" / "f"
    assert t.path("b") == Path("/abs/f")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "is required"),
        (b"[mqtt\n", "not valid TOML"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"a = " + b"[" * 100_000, "nested too deeply"),
        (b"a = " + b"9" * 5000, "not valid TOML"),  # beyond Python's int conversion limit
        (b"# " + b"x" * MAX_CONFIG_BYTES, "not a config file"),
        (b"[mqtt]\nhost = 'h'\n[mqtt]\n", "not valid TOML"),
    ],
)
def test_broken_files_give_one_line_config_errors(
    tmp_path: Path, data: bytes, problem: str
) -> None:
    dev = make_device(tmp_path)
    dev.config_path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_device(dev.config_path)
    assert problem in str(info.value)
    assert str(dev.config_path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_folder_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_hub(tmp_path)


# -- truncation and garbage: ConfigError, never another exception --------------------------


def _load_never_crashes(loader: object, data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            loader(path)  # type: ignore[operator]
        except ConfigError as exc:
            assert "\n" not in str(exc)  # noqa: PT017 - the message is one line
            assert str(path) in str(exc)  # noqa: PT017 - and names the file


_DEVICE_TEXT = make_device(
    Path(tempfile.mkdtemp()), overrides={"alarm": {"grace_seconds": 20}}
).config_path.read_bytes()


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=max(len(_DEVICE_TEXT), len(FULL))))
def test_every_truncation_gives_a_config_error_or_a_config(cut: int) -> None:
    _load_never_crashes(load_device, _DEVICE_TEXT[:cut], "device.toml")
    _load_never_crashes(load_hub, FULL.encode()[:cut], "hub.toml")


_KEYS = st.sampled_from(
    ["host", "port", "keepalive", "id", "keys", "delay", "channels", "urls", "lat", "map_url",
     "button", "hold_seconds", "capacity", "url", "public", "suite", "x", "\u00e9", '"a.b"']
)  # fmt: skip
_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).replace("inf", "inf")),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
    st.sampled_from(
        ["true", "false", "[]", "[1, 'a']", "{}", "{ a = 1 }", "'{zoom}'", "1979-05-27"]
    ),
)
_LINES = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", _KEYS, _VALUES),
    st.sampled_from(["[device]", "[hub]", "[mqtt]", "[store]", "[pins]", "[alarm]",
                     "[[escalation.tiers]]", "[channels.ops]", "[[channels.ops.recipients]]",
                     "[escalation]", "[outbox]", "[gps]", "[broker]"]),
    st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINES, max_size=25), st.sampled_from(["device", "hub"]))
def test_random_toml_ish_files_give_config_errors_only(lines: list[str], side: str) -> None:
    data = "\n".join(lines).encode("utf-8", "surrogateescape")
    _load_never_crashes(load_device if side == "device" else load_hub, data, f"{side}.toml")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=2000))
def test_garbage_spliced_into_a_good_file_gives_config_errors_only(junk: bytes, at: int) -> None:
    text = FULL.encode()
    _load_never_crashes(load_hub, text[:at] + junk + text[at:], "hub.toml")
    _load_never_crashes(load_device, _DEVICE_TEXT[:at] + junk + _DEVICE_TEXT[at:], "device.toml")


# -- the password file ---------------------------------------------------------------------


def _secret(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "pw"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_password_file_holds_one_line(tmp_path: Path) -> None:
    assert read_password_file(_secret(tmp_path, b"s3cret\n"), key="k") == "s3cret"
    assert read_password_file(_secret(tmp_path, b"with space"), key="k") == "with space"


@pytest.mark.parametrize(
    ("data", "mode", "error", "problem"),
    [
        (b"s3cret\n", 0o644, InsecureKeyFile, "has mode 0644; run 'chmod 600"),
        (b"s3cret\n", 0o604, InsecureKeyFile, "chmod 600"),
        (b"", 0o600, KeyFileError, "one line of printable text"),
        (b"\n", 0o600, KeyFileError, "one line of printable text"),
        (b"one\ntwo\n", 0o600, KeyFileError, "one line of printable text"),
        (b"a\x00b", 0o600, KeyFileError, "one line of printable text"),
        (b"\xff\xfe", 0o600, KeyFileError, "not UTF-8"),
        (b"x" * 5000, 0o600, KeyFileError, "one line of printable text"),
    ],
)
def test_bad_password_files_are_refused(
    tmp_path: Path, data: bytes, mode: int, error: type[Exception], problem: str
) -> None:
    with pytest.raises(error, match=r"hub\.toml: mqtt\.password_file: ") as info:
        read_password_file(_secret(tmp_path, data, mode), key="hub.toml: mqtt.password_file")
    assert problem in str(info.value)
    assert "s3cret" not in str(info.value)  # never the secret itself


def test_password_file_that_is_a_folder_or_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="is not a regular file"):
        read_password_file(tmp_path, key="k")
    with pytest.raises(KeyFileError, match="does not exist"):
        read_password_file(tmp_path / "absent", key="k")
    if os.geteuid() != 0:  # root reads anything
        unreadable = _secret(tmp_path, b"x", 0o000)
        with pytest.raises(KeyFileError, match="cannot read"):
            read_password_file(unreadable, key="k")


def test_mqtt_settings_fill_in_what_the_file_omits(tmp_path: Path) -> None:
    top = table(tmp_path, "[mqtt]\nhost = 'h'\n")
    mqtt = MqttConfig.read(top.table("mqtt"))
    settings_ = mqtt.settings(client_id="dev", username="dev")
    assert (settings_.host, settings_.port, settings_.client_id, settings_.username) == (
        "h", 8883, "dev", "dev",
    )  # fmt: skip
    with pytest.raises(MissingConfigValue, match="client id"):
        mqtt.settings()
