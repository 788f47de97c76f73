"""Hub stores for tests: a SQLite file, or an isolated schema in the run's own PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.support.postgres import PostgresServer


@contextmanager
def postgres_url(server: PostgresServer) -> Iterator[str]:
    """Create a fresh schema on `server`, yield a URL using it, drop it afterwards."""
    schema = f"vigil_test_{secrets.token_hex(6)}"
    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{server.url}?options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for an empty store of the backend `request.param` ("sqlite" or "postgresql").

    The session's PostgreSQL server (fixture `postgres`) starts only when a test asks
    for that backend, so a SQLite-only run does not pay for it.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        with postgres_url(request.getfixturevalue("postgres")) as url:
            yield url
