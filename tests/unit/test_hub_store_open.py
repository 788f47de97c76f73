"""Opening the hub store: a misspelt, missing or unwritable path is one clear line."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.parties import parties
from vigil.errors import StoreMissing, StoreNotWritable
from vigil.hub.cli import main
from vigil.hub.store import open_store, schema

ROOT = Path(__file__).resolve().parents[2]


def _hub_toml(tmp_path: Path, db: Path) -> Path:
    parties().hub.save(tmp_path / "hub.key")
    path = tmp_path / "hub.toml"
    path.write_text(
        f'[hub]\nkeys = "hub.key"\n[store]\nurl = "sqlite:///{db}"\n[mqtt]\nhost = "127.0.0.1"\n'
    )
    return path


def _as_unprivileged(action: Callable[[], None]) -> str:
    """Run `action` as a user who cannot write root's 0755 folders; return its error text."""
    if os.geteuid() != 0:
        try:
            action()
        except (StoreMissing, StoreNotWritable) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe, then exits
        text = "child failed"
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            action()
            text = "no error"
        except (StoreMissing, StoreNotWritable) as exc:
            text = f"{type(exc).__name__}: {exc}"
        except BaseException as exc:
            text = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            os.write(write, text.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return text


def test_a_misspelt_path_is_refused_not_created(tmp_path: Path) -> None:
    db = tmp_path / "hbu.db"
    with pytest.raises(StoreMissing, match=r"no SQLite store at .*hbu\.db.*vigil-hub init"):
        open_store(f"sqlite:///{db}")
    assert not db.exists()


def test_a_missing_folder_is_named_even_with_create(tmp_path: Path) -> None:
    db = tmp_path / "no-such-folder" / "hub.db"
    with pytest.raises(StoreMissing, match=r"folder of the SQLite store .* does not exist"):
        open_store(f"sqlite:///{db}", create=True)
    assert not db.parent.exists()


@pytest.fixture
def locked_folder() -> Iterator[Path]:
    """A folder others may enter but not write (outside pytest's 0700 temp tree)."""
    folder = Path(tempfile.mkdtemp(prefix="vigil-locked-"))
    folder.chmod(0o755 if os.geteuid() == 0 else 0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_a_folder_this_user_cannot_write_is_named(locked_folder: Path) -> None:
    folder = locked_folder
    text = _as_unprivileged(lambda: open_store(f"sqlite:///{folder / 'hub.db'}", create=True))
    assert text.startswith("StoreNotWritable: cannot create the SQLite store")
    assert "not writable by this user" in text
    folder.chmod(0o755)
    open_store(f"sqlite:///{folder / 'hub.db'}", create=True).close()  # its owner can
    folder.chmod(0o755 if os.geteuid() == 0 else 0o555)
    text = _as_unprivileged(lambda: open_store(f"sqlite:///{folder / 'hub.db'}"))
    assert text.startswith("StoreNotWritable: the SQLite store")


def test_init_creates_and_is_idempotent_then_commands_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _hub_toml(tmp_path, tmp_path / "hub.db")
    assert main(["stats", "--config", str(config)], out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "run 'vigil-hub init'" not in err  # the advice names the command as typed:
    assert "create it with 'vigil-hub init'" in err
    for _ in range(2):
        out = io.StringIO()
        assert main(["init", "--config", str(config)], out=out) == 0
        assert f"(schema {schema.LATEST})" in out.getvalue()
    out = io.StringIO()
    assert main(["stats", "--config", str(config)], out=out) == 0
    assert "stored uplinks: 0" in out.getvalue()


def test_run_refuses_a_missing_store_in_one_line(tmp_path: Path) -> None:
    config = _hub_toml(tmp_path, tmp_path / "missing.db")
    done = subprocess.run(
        [sys.executable, "-m", "vigil.hub.cli", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"vigil-hub: there is no SQLite store at {tmp_path / 'missing.db'}: create it with "
        "'vigil-hub init' (or fix store.url in the hub config)"
    ]
    assert not (tmp_path / "missing.db").exists()
