"""The one TOML reader of device and hub: typed getters whose errors name the file and the key.

Every error is one line that names the file and the full dotted key, says what
the value must be and shows what it was, as in

    /etc/vigil/device.toml: mqtt.port must be an integer 1-65535, got 'x'

A key that nothing read is a typo, never silently ignored; the error suggests
the closest known key (difflib). Relative paths are resolved against the
config file's folder, so a service started with `/` as its working directory
reads the same files as a technician in the config's folder.

    top = load_toml(path)
    mqtt = MqttConfig.read(top.table("mqtt", required=True))
    top.check_unknown()
"""

from __future__ import annotations

import json
import math
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, overload

from vigil.errors import (
    BadConfigValue,
    ConfigError,
    InsecureKeyFile,
    KeyFileError,
    MissingConfigValue,
)
from vigil.runtime.mqtt import MqttSettings, Will

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; anything this large is the wrong file
MAX_SECRET_BYTES = 4096
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a key that must be in the file."""


def load_toml(path: Path) -> Table:
    """Parse the TOML file at `path` into its top-level `Table`; any failure is a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a folder, not a config file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise BadConfigValue(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a config file")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadConfigValue(
            f"{path}: not UTF-8 text (byte {exc.start}): not a config file"
        ) from exc
    except ValueError as exc:  # TOMLDecodeError, and integers too long to convert
        raise BadConfigValue(f"{path}: not valid TOML: {_one_line(str(exc))}") from exc
    except RecursionError as exc:
        raise BadConfigValue(f"{path}: not valid TOML: nested too deeply") from exc
    return Table(doc, file=path)


class Table:
    """One TOML table; getters record which keys were read so that the rest are typos."""

    def __init__(self, doc: Mapping[str, Any], *, file: Path, where: str = "") -> None:
        self.doc, self.file, self.where = doc, file, where
        self._seen: set[str] = set()
        self._children: list[Table] = []

    # -- names and errors ----------------------------------------------------------------

    def key(self, name: str) -> str:
        """The full dotted key of `name` in this table, as a person would type it."""
        shown = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
        return f"{self.where}.{shown}" if self.where else shown

    def fail(self, name: str, problem: str) -> BadConfigValue:
        """An error about key `name`: '<file>: <dotted key> <problem>'."""
        return BadConfigValue(f"{self.file}: {self.key(name)} {_one_line(problem)}")

    def build(
        self, make: Callable[..., T], values: Mapping[str, Any], *, blame: str | None = None
    ) -> T:
        """Call `make(**values)`; its error becomes one naming key `blame`, or this table."""
        try:
            return make(**values)
        except (ValueError, TypeError, ConfigError) as exc:
            where = self.key(blame) if blame else f"[{self.where}]"
            raise BadConfigValue(f"{self.file}: {where}: {_one_line(str(exc))}") from exc

    # -- typed getters -------------------------------------------------------------------

    def _get(self, name: str, default: object) -> object:
        """The value of `name`, or `default`; callers check only values from the file."""
        self._seen.add(name)
        if name in self.doc:
            return self.doc[name]
        if default is REQUIRED:
            hint = _close(name, [k for k in self.doc if k not in self._seen])
            also = f" ('{hint}' in the file looks like a typo of it)" if hint else ""
            where = f"[{self.where}]" if self.where else "the file"
            raise MissingConfigValue(f"{self.file}: {self.key(name)} is required in {where}{also}")
        return default

    @overload
    def text(self, name: str, default: str | _Required = REQUIRED) -> str: ...
    @overload
    def text(self, name: str, default: None) -> str | None: ...
    def text(self, name: str, default: str | _Required | None = REQUIRED) -> str | None:
        """A non-empty string of one line of printable text."""
        value = self._get(name, default)
        if name not in self.doc:
            return default  # type: ignore[return-value]
        if not isinstance(value, str) or not value.strip() or not value.isprintable():
            raise self.fail(name, f"must be one line of printable text, got {_show(value)}")
        return value

    def choice(self, name: str, choices: Mapping[str, T], default: str) -> T:
        """One of the names in `choices`, mapped to its value."""
        value = self.text(name, default)
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}, got {_show(value)}")
        return choices[value]

    @overload
    def integer(self, name: str, default: int | _Required, *, low: int, high: int) -> int: ...
    @overload
    def integer(self, name: str, default: None, *, low: int, high: int) -> int | None: ...
    def integer(
        self, name: str, default: int | _Required | None, *, low: int, high: int
    ) -> int | None:
        """An integer in low..high (a TOML float or bool is refused)."""
        value = self._get(name, default)
        if name not in self.doc:
            return default  # type: ignore[return-value]
        if type(value) is not int or not low <= value <= high:
            raise self.fail(name, f"must be an integer {low}-{high}, got {_show(value)}")
        return value

    @overload
    def number(
        self, name: str, default: float | _Required, *, low: float = ..., high: float = ...,
        above: float | None = ...,
    ) -> float: ...  # fmt: skip
    @overload
    def number(
        self, name: str, default: None, *, low: float = ..., high: float = ...,
        above: float | None = ...,
    ) -> float | None: ...  # fmt: skip
    def number(
        self, name: str, default: float | _Required | None, *, low: float = -math.inf,
        high: float = math.inf, above: float | None = None,
    ) -> float | None:  # fmt: skip
        """A finite number in low..high (and > `above` if given); integers are accepted."""
        value = self._get(name, default)
        if name not in self.doc:
            return None if default is None else float(default)  # type: ignore[arg-type]
        number = _finite(value)
        if number is None or not low <= number <= high or (above is not None and number <= above):
            bounds = [f"> {above:g}"] if above is not None else []
            bounds += [f">= {low:g}"] if low > -math.inf else []
            bounds += [f"<= {high:g}"] if high < math.inf else []
            wanted = f"a number {' and '.join(bounds)}" if bounds else "a finite number"
            raise self.fail(name, f"must be {wanted}, got {_show(value)}")
        return number

    def boolean(self, name: str, default: bool | _Required) -> bool:
        """true or false (TOML booleans only: "yes" and 1 are refused)."""
        value = self._get(name, default)
        if name not in self.doc:
            return default  # type: ignore[return-value]
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {_show(value)}")
        return value

    @overload
    def path(self, name: str, default: Path | _Required = REQUIRED) -> Path: ...
    @overload
    def path(self, name: str, default: None) -> Path | None: ...
    def path(self, name: str, default: Path | _Required | None = REQUIRED) -> Path | None:
        """A file system path; a relative one is resolved against the config file's folder."""
        self._get(name, default)
        if name not in self.doc:
            return default  # type: ignore[return-value]
        text = self.text(name)
        if "\0" in text:
            raise self.fail(name, "must not contain a NUL character")
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.file.parent / p).resolve()

    def strings(self, name: str, *, default: tuple[str, ...] | _Required = ()) -> tuple[str, ...]:
        """A list of non-empty strings of printable text."""
        value = self._get(name, default)
        if name not in self.doc:
            return default  # type: ignore[return-value]
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v.strip() and v.isprintable() for v in value
        ):
            raise self.fail(name, f"must be a list of strings, got {_show(value)}")
        return tuple(value)

    # -- nested tables -------------------------------------------------------------------

    def table(self, name: str, *, required: bool = False) -> Table:
        """The sub-table `name` (an empty one when absent and not required)."""
        if required and name not in self.doc:
            self._seen.add(name)
            raise MissingConfigValue(f"{self.file}: the table [{self.key(name)}] is required")
        value = self._get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a table ([{self.key(name)}]), got {_show(value)}")
        return self._child(value, self.key(name))

    def tables(self, name: str) -> list[Table]:
        """The array of tables `name` (`[[name]]`), each named with its index."""
        value = self._get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(name, f"must be an array of tables ([[{self.key(name)}]])")
        return [self._child(v, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def subtables(self) -> dict[str, Table]:
        """Every key of this table, each holding a table: for tables of named things."""
        out = {}
        for name in self.doc:
            if not name.strip() or not name.isprintable():
                raise self.fail(name, "is not a usable name: use letters, digits, '-' and '_'")
            out[name] = self.table(name)
        return out

    def _child(self, doc: Mapping[str, Any], where: str) -> Table:
        child = Table(doc, file=self.file, where=where)
        self._children.append(child)
        return child

    def check_unknown(self) -> None:
        """Refuse the first key that nothing read: a typo must not switch a feature off."""
        for name in self.doc:
            if name not in self._seen:
                hint = _close(name, sorted(self._seen))
                also = f"did you mean {self.key(hint)}?" if hint else "check its spelling"
                is_table = isinstance(self.doc[name], dict)
                what = f"table [{self.key(name)}]" if is_table else f"key {self.key(name)}"
                raise BadConfigValue(f"{self.file}: unknown {what} (a typo? {also})")
        for child in self._children:
            child.check_unknown()


def _close(name: str, candidates: Iterable[str]) -> str | None:
    import difflib  # noqa: PLC0415 - only for a config with a typo; not in every daemon's memory

    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def _show(value: object) -> str:
    """A value for an error line: quoted, escaped, short (a hostile value stays one line)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return "an integer of more than 64 bits"
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the MQTT section and its password file, shared by device and hub ---------------------


def read_password_file(path: Path, *, key: str) -> str:
    """Read a secret of one line of printable text from a file only its owner may read.

    `key` names where the path came from ("/etc/vigil/hub.toml: mqtt.password_file").
    """
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{key}: {path} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{key}: {path} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):  # a secret: 0600 like the keys
        mode = stat.S_IMODE(info.st_mode)
        raise InsecureKeyFile(f"{key}: {path} has mode {mode:04o}; run 'chmod 600 {path}'")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
        text = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise KeyFileError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{key}: {path} is not UTF-8 text") from exc
    if len(data) > MAX_SECRET_BYTES or not text.strip() or not text.isprintable():
        raise KeyFileError(f"{key}: {path} must hold one line of printable text (the password)")
    return text


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How to reach the broker (`[mqtt]`); `source` is the config file, named in errors."""

    host: str
    port: int = 8883
    client_id: str | None = None
    tls_ca: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    shared_group: str | None = None
    keepalive: int = 30
    source: Path | None = field(default=None, compare=False)

    @classmethod
    def read(cls, t: Table, *, client_id: str | None = None, shared: bool = False) -> MqttConfig:
        """Read `[mqtt]`; `client_id` is the default of a `client_id` key (None: no such key),
        `shared` allows `shared_group` (a hub's MQTT v5 shared subscription)."""
        group = t.text("shared_group", None) if shared else None
        if group is not None and any(c in group for c in "/+# "):
            raise t.fail("shared_group", f"must not contain '/', '+', '#' or spaces: {group!r}")
        ident = t.text("client_id", client_id) if client_id is not None else None
        if ident is not None and len(ident) > 64:
            raise t.fail("client_id", "must be at most 64 characters")
        return cls(
            host=t.text("host"),
            port=t.integer("port", 8883, low=1, high=65535),
            client_id=ident,
            tls_ca=t.path("tls_ca", None),
            username=t.text("username", None),
            password_file=t.path("password_file", None),
            shared_group=group,
            keepalive=t.integer("keepalive", 30, low=5, high=3600),
            source=t.file,
        )

    def _key(self, name: str) -> str:
        return f"{self.source}: mqtt.{name}" if self.source else f"mqtt.{name}"

    def check_tls_ca(self) -> None:
        """Refuse a `tls_ca` that names no file (TLS would fail on every connect)."""
        if self.tls_ca is not None and not self.tls_ca.is_file():
            raise BadConfigValue(f"{self._key('tls_ca')}: no CA file at {self.tls_ca}")

    def password(self) -> str | None:
        """The broker password from `password_file` (0600, one line), or None without one."""
        if self.password_file is None:
            return None
        return read_password_file(self.password_file, key=self._key("password_file"))

    def settings(
        self,
        *,
        client_id: str | None = None,
        username: str | None = None,
        will: Will | None = None,
    ) -> MqttSettings:
        """The vigil.runtime.mqtt settings; `client_id`/`username` fill in what the file omits."""
        self.check_tls_ca()
        ident = self.client_id or client_id
        if ident is None:
            raise MissingConfigValue(f"{self._key('client_id')}: no client id to connect with")
        return MqttSettings(
            host=self.host,
            port=self.port,
            client_id=ident,
            username=self.username or username,
            password=self.password(),
            tls_ca=self.tls_ca,
            keepalive=self.keepalive,
            will=will,
        )
