"""The one backoff formula: capped doubling, full jitter drawn from an injected source."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.runtime.backoff import backoff_ceiling, backoff_delay


def test_ceiling_doubles_from_the_base_and_stops_at_the_cap() -> None:
    ceilings = [backoff_ceiling(n, base=2, cap=20) for n in range(1, 7)]
    assert ceilings == [2, 4, 8, 16, 20, 20]


def test_the_random_source_picks_a_point_between_zero_and_the_ceiling() -> None:
    assert backoff_delay(3, base=2, cap=20, rand=lambda: 1.0) == 8
    assert backoff_delay(3, base=2, cap=20, rand=lambda: 0.5) == 4
    assert backoff_delay(3, base=2, cap=20, rand=lambda: 0.0) == 0
    assert backoff_delay(3, base=2, cap=20, rand=lambda: 7.0) == 8  # a bad source is clamped


def test_jitter_spreads_a_crowd_of_clients() -> None:
    rng = random.Random(9)  # noqa: S311 - jitter, not secrets
    delays = {backoff_delay(4, base=10, cap=300, rand=rng.random) for _ in range(100)}
    assert len(delays) == 100
    assert min(delays) < 20
    assert 60 < max(delays) <= 80


@given(attempt=st.integers(1, 10_000), base=st.floats(0.001, 100), extra=st.floats(0, 1e6))
def test_never_negative_never_past_the_cap_even_after_many_attempts(
    attempt: int, base: float, extra: float
) -> None:
    cap = base + extra
    assert 0 <= backoff_delay(attempt, base=base, cap=cap, rand=lambda: 1.0) <= cap


@pytest.mark.parametrize(
    ("attempt", "base", "cap"), [(0, 1, 2), (-3, 1, 2), (1, 0, 2), (1, 3, 2), (1, -1, 2)]
)
def test_nonsense_is_refused(attempt: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError, match=r"attempt|base"):
        backoff_delay(attempt, base=base, cap=cap)
