"""Hub stores for tests: a SQLite file, or an isolated schema in the local PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_url() -> Iterator[str]:
    """Create a fresh schema in the test database, yield a URL using it, drop it afterwards."""
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (db 'test') is not reachable: {exc}")
    schema = f"vigil_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{PG_URL}?options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL for an empty store of `backend` ("sqlite" or "postgresql")."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        with postgres_url() as url:
            yield url
