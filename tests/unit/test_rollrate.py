"""Roll rates: the Markov chain estimated from bucket changes, its forecast and back-test, on a
book whose true transition matrix is known."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from services.ledger.domain import rollrate

TRUE = {
    "current": {"current": 0.9, "1-29": 0.1},
    "1-29": {"current": 0.4, "1-29": 0.2, "30-59": 0.4},
    "30-59": {"current": 0.2, "30-59": 0.1, "60-89": 0.7},
    "60-89": {"current": 0.1, "90-119": 0.9},
}
START = datetime(2026, 6, 1, tzinfo=UTC)


def chain(
    accounts: int, periods: int, seed: int
) -> tuple[list[rollrate.Book], list[rollrate.Change]]:
    rng = random.Random(seed)
    book, changes = [], []
    for n in range(accounts):
        bucket = "current"
        for k in range(periods):
            row = TRUE.get(bucket, {bucket: 1.0})
            to = rng.choices(list(row), weights=list(row.values()))[0]
            if to != bucket:
                at = START + timedelta(days=10 * k + rng.uniform(0.1, 9.9))
                changes.append(rollrate.Change(f"A{n}", at, bucket, to))
            bucket = to
        book.append(rollrate.Book(f"A{n}", date(2026, 1, 1), bucket))
    changes.sort(key=lambda c: c.at)
    return book, changes


def test_the_estimated_matrix_recovers_the_true_one_within_its_sampling_error() -> None:
    book, changes = chain(4000, 8, 1)
    bounds = rollrate.boundaries(START + timedelta(days=80), 10, 8)
    counts = rollrate.transitions(book, changes, bounds)
    matrix = rollrate.estimate(counts, range(8))
    seen = rollrate.observed(counts, range(8))
    for a, row in TRUE.items():
        for b in rollrate.NAMES:
            p = row.get(b, 0.0)
            se = (p * (1 - p) / seen[a]) ** 0.5
            assert abs(matrix[a][b] - p) <= 4 * se + 1e-9, (a, b)


def test_each_back_tested_period_is_within_the_tolerance_of_its_own_sample() -> None:
    book, changes = chain(3000, 7, 2)
    bounds = rollrate.boundaries(START + timedelta(days=70), 10, 7)
    made = rollrate.forecast(rollrate.transitions(book, changes, bounds), bounds, 10, 30)
    assert len(made.back_test) == 6
    for test in made.back_test:
        assert test.accounts == 3000
        assert test.error <= test.tolerance, test
    informed = [t for t in made.back_test if not t.unseen]
    assert len(informed) >= 2  # once every bucket reached has been seen before
    for test in informed:
        assert test.error < 0.05
        assert test.cures_predicted == pytest.approx(test.cures_actual, rel=0.2)


def test_a_forecast_runs_the_chain_to_its_horizon_and_weighs_the_overdue_by_cure() -> None:
    book, changes = chain(2000, 6, 3)
    bounds = rollrate.boundaries(START + timedelta(days=60), 10, 6)
    made = rollrate.forecast(rollrate.transitions(book, changes, bounds), bounds, 10, 30)
    one = rollrate.advance(made.now, made.matrix, 1)
    three = rollrate.advance(one, made.matrix, 2)
    assert made.predicted == pytest.approx(three, abs=0.1)  # the matrix shown is rounded
    assert sum(made.predicted.values()) == pytest.approx(2000)
    assert made.cure_probability["1-29"] > made.cure_probability["60-89"]
    recovery = rollrate.expected_recovery(
        [("1-29", "CNY", Decimal("100")), ("60-89", "CNY", Decimal("100"))], made.cure_probability
    )
    expected = Decimal("100") * Decimal(str(made.cure_probability["1-29"])) + Decimal(
        "100"
    ) * Decimal(str(made.cure_probability["60-89"]))
    assert recovery == {"CNY": expected.quantize(Decimal("0.01"))}


def test_an_account_opened_after_a_boundary_is_not_counted_in_that_period() -> None:
    book = [rollrate.Book("new", date(2026, 6, 5), "current")]
    bounds = [START, START + timedelta(days=10), START + timedelta(days=20)]
    counts = rollrate.transitions(book, [], bounds)
    assert dict(counts) == {(1, "current", "current"): 1}
