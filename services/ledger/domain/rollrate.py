"""Roll rates: how accounts move between delinquency buckets from one period to the next, as a
Markov chain estimated from the ledger's bucket history; the forecast of the buckets (and of
what is recovered: accounts back to current, and their overdue amounts) some periods ahead;
and the back-test that forecasts each past period from the ones before it and says how far off
it was, beside the error the sample alone would explain.

Pure: bucket changes and counts in, dataclasses out. The SQL in
``services/ledger/repository/rollrate.py`` computes :func:`transitions` set-based; this module
is its specification (tests/integration/test_ledger_sql.py holds them together)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from services.ledger.domain.delinquency import BUCKETS

NAMES: tuple[str, ...] = tuple(name for _, name in BUCKETS)
CURRENT = NAMES[0]
Matrix = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Change:
    account_id: str
    at: datetime
    from_bucket: str
    to_bucket: str


@dataclass(frozen=True)
class Book:
    account_id: str
    opened_on: date
    bucket: str  # now


def boundaries(as_of: datetime, step_days: int, periods: int) -> list[datetime]:
    """``periods`` + 1 instants, ``step_days`` apart, the last one ``as_of``, ascending."""
    return [as_of - timedelta(days=step_days * k) for k in range(periods, -1, -1)]


def bucket_at(changes: Sequence[Change], now_bucket: str, at: datetime) -> str:
    """An account's bucket at ``at``: where its last change by then left it; before its first
    change, where that change started from; never changed: where it is now. ``changes`` in the
    order they happened."""
    before = [c for c in changes if c.at <= at]
    if before:
        return before[-1].to_bucket
    return changes[0].from_bucket if changes else now_bucket


def transitions(
    book: Iterable[Book], changes: Iterable[Change], bounds: Sequence[datetime]
) -> Counter[tuple[int, str, str]]:
    """(period k, bucket at bounds[k], bucket at bounds[k+1]) -> accounts, for every account
    opened by bounds[k]."""
    by_account: dict[str, list[Change]] = defaultdict(list)
    for change in changes:
        by_account[change.account_id].append(change)
    out: Counter[tuple[int, str, str]] = Counter()
    for account in book:
        mine = by_account.get(account.account_id, [])
        states = [bucket_at(mine, account.bucket, b) for b in bounds]
        for k in range(len(bounds) - 1):
            if account.opened_on <= bounds[k].astimezone(UTC).date():
                out[(k, states[k], states[k + 1])] += 1
    return out


def estimate(counts: Mapping[tuple[int, str, str], int], periods: Iterable[int]) -> Matrix:
    """The transition matrix pooled over ``periods``; a bucket never seen stays where it is."""
    wanted = set(periods)
    moves: dict[str, Counter[str]] = defaultdict(Counter)
    for (k, a, b), n in counts.items():
        if k in wanted:
            moves[a][b] += n
    matrix: Matrix = {}
    for a in NAMES:
        total = sum(moves[a].values())
        matrix[a] = {b: (moves[a][b] / total if total else float(a == b)) for b in NAMES}
    return matrix


def observed(counts: Mapping[tuple[int, str, str], int], periods: Iterable[int]) -> dict[str, int]:
    """Transitions seen from each bucket in ``periods``."""
    wanted = set(periods)
    return _tally(((a, n) for (k, a, _), n in counts.items() if k in wanted))


def at_start(counts: Mapping[tuple[int, str, str], int], k: int) -> dict[str, int]:
    """Where the accounts of period ``k`` stood as it began."""
    return _tally((a, n) for (period, a, _), n in counts.items() if period == k)


def at_end(counts: Mapping[tuple[int, str, str], int], k: int) -> dict[str, int]:
    """Where the accounts of period ``k`` stood as it ended."""
    return _tally((b, n) for (period, _, b), n in counts.items() if period == k)


def _tally(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for bucket, n in pairs:
        out[bucket] += n
    return {b: out[b] for b in NAMES}


def advance(distribution: Mapping[str, float], matrix: Matrix, steps: int) -> dict[str, float]:
    current = {a: float(distribution.get(a, 0)) for a in NAMES}
    for _ in range(steps):
        current = {b: sum(current[a] * matrix[a][b] for a in NAMES) for b in NAMES}
    return current


@dataclass(frozen=True)
class BackTest:
    origin: datetime  # forecast made here, from the periods before it
    accounts: int
    predicted: dict[str, float]
    actual: dict[str, int]
    error: float  # share of accounts in the wrong bucket: half the sum of |predicted - actual|
    # the error sampling and estimation alone would reach (3 sigma), plus the accounts in
    # buckets the earlier periods never saw anyone leave
    tolerance: float
    unseen: int  # accounts in buckets no earlier period saw anyone leave
    cures_predicted: float  # delinquent accounts back to current in the period
    cures_actual: int


def back_test(
    counts: Mapping[tuple[int, str, str], int], bounds: Sequence[datetime]
) -> list[BackTest]:
    """Each period k >= 1 forecast one step from its start with the matrix of periods 0..k-1."""
    out = []
    for k in range(1, len(bounds) - 1):
        start = at_start(counts, k)
        total = sum(start.values())
        if not total:
            continue
        matrix = estimate(counts, range(k))
        seen = observed(counts, range(k))
        predicted = advance(start, matrix, 1)
        actual = at_end(counts, k)
        error = sum(abs(predicted[b] - actual[b]) for b in NAMES) / 2 / total
        # per bucket, the variance of the count: multinomial draws from each starting bucket,
        # plus the matrix's own estimation error (p(1-p)/m per row, scaled by the row's count)
        sigma = 0.0
        for b in NAMES:
            var = sum(
                start[a] * matrix[a][b] * (1 - matrix[a][b])
                + (start[a] ** 2 * matrix[a][b] * (1 - matrix[a][b]) / seen[a] if seen[a] else 0)
                for a in NAMES
            )
            sigma += math.sqrt(var)
        # accounts in a bucket no earlier period saw leave it are forecast to stay: the matrix
        # knows nothing of them, so each may be wrong whatever the sample
        unseen = sum(start[a] for a in NAMES if not seen[a])
        cured = {a: counts.get((k, a, CURRENT), 0) for a in NAMES if a != CURRENT}
        out.append(
            BackTest(
                origin=bounds[k],
                accounts=total,
                predicted={b: round(v, 2) for b, v in predicted.items()},
                actual=actual,
                error=round(error, 4),
                tolerance=round((3 * sigma / 2 + unseen) / total, 4),
                unseen=unseen,
                cures_predicted=round(
                    sum(start[a] * matrix[a][CURRENT] for a in NAMES if a != CURRENT), 2
                ),
                cures_actual=sum(cured.values()),
            )
        )
    return out


@dataclass(frozen=True)
class Forecast:
    as_of: datetime
    step_days: int
    horizon_days: int
    matrix: Matrix
    observations: dict[str, int]  # transitions seen from each bucket
    now: dict[str, int]
    predicted: dict[str, float]  # the buckets ``horizon_days`` after ``as_of``
    cure_probability: dict[str, float]  # from each bucket, back to current by the horizon
    back_test: list[BackTest]
    mean_error: float | None


def forecast(
    counts: Mapping[tuple[int, str, str], int],
    bounds: Sequence[datetime],
    step_days: int,
    horizon_days: int,
) -> Forecast:
    """From the buckets at ``bounds[-1]`` (counted as the last period ends), ``horizon_days``
    ahead with the matrix of every period before."""
    periods = range(len(bounds) - 1)
    matrix = estimate(counts, periods)
    now = at_end(counts, len(bounds) - 2) if len(bounds) > 1 else dict.fromkeys(NAMES, 0)
    steps = max(1, round(horizon_days / step_days))
    tests = back_test(counts, bounds)
    return Forecast(
        as_of=bounds[-1],
        step_days=step_days,
        horizon_days=horizon_days,
        matrix={a: {b: round(p, 4) for b, p in row.items()} for a, row in matrix.items()},
        observations=observed(counts, periods),
        now=now,
        predicted={b: round(v, 2) for b, v in advance(now, matrix, steps).items()},
        cure_probability={
            a: round(advance({a: 1.0}, matrix, steps)[CURRENT], 4) for a in NAMES if a != CURRENT
        },
        back_test=tests,
        mean_error=round(sum(t.error for t in tests) / len(tests), 4) if tests else None,
    )


def expected_recovery(
    overdue: Iterable[tuple[str, str, Decimal]], cure: Mapping[str, float]
) -> dict[str, Decimal]:
    """(bucket, currency, overdue) of each delinquent account: by currency, the overdue amounts
    weighted by each bucket's chance of being back to current by the horizon."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for bucket, currency, amount in overdue:
        out[currency] += amount * Decimal(str(cure.get(bucket, 0.0)))
    return {c: v.quantize(Decimal("0.01")) for c, v in sorted(out.items())}
