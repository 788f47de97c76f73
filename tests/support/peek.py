"""One-line store access for assertions: `peek(store, lambda tx: tx.alerts.all())`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from vigil.hub.store import Store, Transaction

T = TypeVar("T")


def peek(store: Store, query: Callable[[Transaction], T]) -> T:
    """Run `query` in its own read transaction and return its result."""
    with store.read() as tx:
        return query(tx)


def write(store: Store, change: Callable[[Transaction], T]) -> T:
    """Run `change` in its own transaction (committed) and return its result."""
    with store.transaction() as tx:
        return change(tx)
