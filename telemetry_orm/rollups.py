"""Rollups: what every execution added up to, per UTC hour, kept beside
``executions`` so that history outlives the purge and long reports read
hours instead of rows.

Two tables and a state row, beside ``executions`` (which stays the
original's):

- ``telemetry_orm_rollups``: per hour × (repo, model, provider,
  event_type, conclusion) × whether a cost was recorded (``paid``: above
  0): executions, the four token sums, the cost, the duration sum and the
  failed count.
- ``telemetry_orm_rollup_durations``: per hour × the same five columns ×
  duration bucket, how many executions took that long: a mergeable sketch
  of the durations from which a p95 is estimated (:func:`estimate`).
- ``telemetry_orm_rollup_state``: which rows are counted. A row is counted
  when its ``id`` is at most ``counted_ids`` and its ``created_at`` before
  ``counted_before``; ``purged_before`` is the latest cutoff of a purge
  made by this package (rows before it may be gone from ``executions``).

A row is counted once: folding in moves the state forward and adds exactly
the rows between the old state and the new one, in the same transaction.
Rows that arrive later with an old ``created_at`` (imports, copies, clock
skew) have ids past ``counted_ids``, so they are not counted yet, and the
next fold adds them to their hour. A purge folds in the uncounted rows it
deletes in the transaction that deletes them. A keyed write that replaces
a row (``record(…, key=…, replace=True)``, a transcript imported again)
takes the row's old values out of the rollups (:func:`unfold`) if it was
counted and folds the new ones in if the row, maybe at another
``created_at``, counts now, in the transaction of its UPDATE.

The duration sketch: bucket ``0`` holds durations of 0 ms, bucket ``k >=
1`` the durations ``d`` with ``γ**(k-2) < d <= γ**(k-1)``, ``γ = (1 + α) /
(1 - α)``, ``α = 0.5 %``. The middle of a bucket, ``2 γ**(k-1) / (γ + 1)``,
is within α of every duration in it; rounded to a whole millisecond and
kept inside the bucket it stays within 1 % (below 100 ms a bucket holds at
most one whole millisecond, so it is exact). A nearest-rank percentile of
merged sketches is the middle of the bucket holding that rank: within 1 %
of the exact one.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from typing import (
    Any,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from peewee import (
    SQL,
    BigIntegerField,
    Case,
    CompositeKey,
    DoubleField,
    IntegerField,
    Model,
    fn,
)

from .schema import KeyTextField, TimeTextField, format_timestamp, parse_timestamp
from .sql import (
    COST_UNITS_PER_USD,
    Statement,
    Upsert,
    bounded,
    cost_units,
    render,
    upsert_on_conflict,
)

__all__ = [
    "ALPHA", "DIMENSIONS", "DURATIONS_TABLE", "ROLLUPS_TABLE", "STATE_TABLE", "GAMMA",
    "Rollup", "RollupDuration", "RollupResult", "RollupState", "State", "bucket",
    "bucket_value", "estimate",
]

ROLLUPS_TABLE = "telemetry_orm_rollups"
DURATIONS_TABLE = "telemetry_orm_rollup_durations"
STATE_TABLE = "telemetry_orm_rollup_state"
MONTHS_TABLE = "telemetry_orm_rollup_months"
DAYS_TABLE = "telemetry_orm_rollup_days"
MONTH_DURATIONS_TABLE = "telemetry_orm_rollup_month_durations"

#: The columns an hour is rolled up by (PR numbers are not: PR-level
#: detail lives as long as the rows do).
DIMENSIONS: Tuple[str, ...] = ("repo", "model", "provider", "event_type", "conclusion")

#: Relative accuracy of a bucket's middle; with the rounding to whole
#: milliseconds, estimates stay within 1 %.
ALPHA = 0.005
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)

#: The sums of a rollup row, in the order of :class:`~telemetry_orm.report_query.Sums`.
SUMS: Tuple[str, ...] = (
    "executions", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_creation_tokens", "cost_usd", "duration_ms", "failed",
)


def bucket(duration: Any) -> int:
    """The sketch bucket of a duration in milliseconds (see the module)."""
    d = float(duration or 0)
    if d <= 0:
        return 0
    return int(math.ceil(math.log(d) / LOG_GAMMA - 1e-9)) + 1


def bucket_value(k: int) -> int:
    """The duration a bucket stands for: its middle, to the millisecond,
    kept inside the bucket."""
    if k <= 0:
        return 0
    high = GAMMA ** (k - 1)
    low = high / GAMMA
    middle = round(2 * high / (GAMMA + 1))
    # The whole milliseconds of the bucket: (low, high].
    first, last = math.floor(low) + 1, math.floor(high + 1e-9)
    if first > last:  # no whole millisecond in it (not reached by integer durations)
        return max(1, middle)
    return min(max(middle, first), last)


def estimate(counts: Mapping[int, int], rank: int) -> Optional[int]:
    """The duration at ``rank`` (1-based, ascending) of a sketch ``{bucket:
    count}``; ``None`` when the sketch holds fewer."""
    seen = 0
    for k in sorted(counts):
        seen += counts[k]
        if seen >= rank:
            return bucket_value(k)
    return None


@dataclasses.dataclass(frozen=True)
class State:
    """Which rows the rollups count (see the module)."""

    counted_ids: int = 0
    #: ``None``: no row counted by time yet.
    counted_before: Optional[_dt.datetime] = None
    purged_before: Optional[_dt.datetime] = None


@dataclasses.dataclass(frozen=True)
class RollupResult:
    """What :meth:`~telemetry_orm.store.PeeweeTelemetryStore.rollup` did."""

    #: Rows folded in by this call.
    rows: int
    #: Transactions it took.
    steps: int
    #: Rows with ``created_at`` before this (an aware UTC datetime) and an
    #: id up to ``counted_ids`` are counted now.
    counted_before: Optional[_dt.datetime]
    counted_ids: int
    seconds: float


def _sums_model(name: str, period: str, table: str, doc: str) -> Any:
    """A model of the sums per ``period`` (its first column, UTC text) and
    combination; one b-tree by its key (SQLite)."""
    fields: Dict[str, Any] = {period: TimeTextField()}
    fields.update({column: KeyTextField() for column in DIMENSIONS})
    fields["paid"] = IntegerField()
    fields.update({column: DoubleField() if column == "cost_usd" else BigIntegerField()
                   for column in SUMS})
    meta = type("Meta", (), {"table_name": table, "without_rowid": True,
                             "primary_key": CompositeKey(period, *DIMENSIONS, "paid")})
    return type(name, (Model,), {**fields, "Meta": meta, "__doc__": doc,
                                 "__module__": __name__})


Rollup = _sums_model(
    "Rollup", "hour", ROLLUPS_TABLE,
    "One hour of one combination (SQLite layout: one b-tree by its key).")

class RollupDuration(Model):
    """How many executions of one hour and combination fell in one duration bucket."""

    hour = TimeTextField()
    repo = KeyTextField()
    model = KeyTextField()
    provider = KeyTextField()
    event_type = KeyTextField()
    conclusion = KeyTextField()
    bucket = IntegerField()
    executions = BigIntegerField()

    class Meta:
        table_name = DURATIONS_TABLE
        primary_key = CompositeKey("hour", *DIMENSIONS, "bucket")
        without_rowid = True


RollupMonth = _sums_model(
    "RollupMonth", "month", MONTHS_TABLE,
    "One UTC month of one combination: the sums of :class:`Rollup`, for reports over many "
    "months (a report by repo over two years reads 24 months, not 17,520 hours).")

RollupDay = _sums_model(
    "RollupDay", "day", DAYS_TABLE,
    "One UTC day of one combination: the sums of :class:`Rollup` (no duration sketch), for "
    "charts and other reports without p95 by day, week or month in UTC.")

class RollupMonthDuration(Model):
    """The duration sketch of one UTC month per value of one column
    (``dimension``: one of :data:`DIMENSIONS`, or ``''`` for all
    executions): what a p95 by that column alone, or of the totals, needs,
    in as many rows as the column has values, whatever the combinations."""

    month = TimeTextField()
    dimension = KeyTextField()
    value = KeyTextField()
    bucket = IntegerField()
    executions = BigIntegerField()

    class Meta:
        table_name = MONTH_DURATIONS_TABLE
        primary_key = CompositeKey("month", "dimension", "value", "bucket")
        without_rowid = True


class FoldRow(Model):
    """A scratch table (``TEMPORARY``: this connection's alone) holding the
    rows being folded in, summed per hour, combination, paid and duration
    bucket: read once from ``executions``, then added to every rollup table
    from here."""

    hour = TimeTextField()
    day = TimeTextField()
    month = TimeTextField()
    repo = KeyTextField()
    model = KeyTextField()
    provider = KeyTextField()
    event_type = KeyTextField()
    conclusion = KeyTextField()
    paid = IntegerField()
    bucket = IntegerField()
    executions = BigIntegerField()
    input_tokens = BigIntegerField()
    output_tokens = BigIntegerField()
    cache_read_tokens = BigIntegerField()
    cache_creation_tokens = BigIntegerField()
    cost_usd = DoubleField()
    duration_ms = BigIntegerField()
    failed = BigIntegerField()

    class Meta:
        table_name = "telemetry_orm_fold"
        temporary = True
        primary_key = False


class RollupState(Model):
    """The one row saying which rows are counted (times as UTC text)."""

    id = IntegerField(primary_key=True)
    counted_ids = BigIntegerField()
    counted_before = TimeTextField(null=True)
    purged_before = TimeTextField(null=True)

    class Meta:
        table_name = STATE_TABLE


#: The rollup models in the order a backend's ``rollup_models`` lists them.
MODELS: Tuple[Any, ...] = (
    Rollup, RollupDuration, RollupState, RollupMonth, RollupMonthDuration, FoldRow, RollupDay)


# --- SQL ------------------------------------------------------------------------
#
# ``models`` are the three rollup models and ``model`` the ``Execution`` model,
# all bound to one database; ``dialect`` is its engine's ReportDialect. The
# statements are rendered for the driver's own connection, as in
# :mod:`telemetry_orm.sql`, so they run inside a backend's own transactions.


def fold(models: Sequence[Any], model: Any, dialect: Any, where: Any, *,
         sign: int = 1) -> List[Statement]:
    """Add the executions matching ``where`` to their hours and months:
    read them once into this connection's scratch table, then one upsert
    per rollup table from there (the month sketches: one per column and
    one for all executions). ``sign=-1`` takes them out instead: see
    :func:`unfold`."""
    rollup, durations, _, months, month_durations, scratch, days = models
    m = model
    database = m._meta.database
    dims = [getattr(m, name) for name in DIMENSIONS]
    paid = Case(None, [(m.cost_usd > 0, 1)], 0)
    failed = Case(None, [(m.conclusion != "success", 1)], 0)
    sums: List[Any] = [
        fn.COUNT(SQL("*")),
        *(fn.SUM(bounded(getattr(m, name))) for name in SUMS[1:5]),
        fn.SUM(cost_units(bounded(m.cost_usd))),
        fn.SUM(bounded(m.duration_ms)), fn.SUM(failed)]
    if sign != 1:
        sums = [total * SQL(str(int(sign))) for total in sums]
    context = database.get_sql_context()
    statements: List[Statement] = [
        context.sql(scratch._schema._create_table(safe=True, temporary=True)).query(),
        render(database, scratch.delete()),
    ]

    def by(n: int) -> List[Any]:
        return [SQL(str(i)) for i in range(1, n + 1)]

    f = scratch
    f_dims = [getattr(f, name) for name in DIMENSIONS]
    columns = [f.hour, f.day, f.month, *f_dims, f.paid, f.bucket,
               *(getattr(f, n) for n in SUMS)]
    statements.append(render(database, f.insert_from(m.select(
        dialect.hour(m.created_at), dialect.day(m.created_at), dialect.month(m.created_at),
        *dims, paid, dialect.bucket(m.duration_ms), *sums).where(where).group_by(
            *by(len(dims) + 5)), columns)))

    def upsert(target: Any, key: List[Any], selected: Sequence[Any], added: Sequence[str],
               groups: int) -> None:
        sums = [getattr(target, name) for name in added]
        query = f.select(*selected).group_by(*by(groups))
        # Each engine spells "add to the row with this key" its own way.
        statements.append(render(database, dialect.upsert(
            target.insert_from(query, [*key, *sums]), key, sums, True)))

    # The scratch table holds costs in cost units (exact sums); the rollups
    # keep dollars, from which a report takes the same units back.
    totals = [fn.SUM(f.cost_usd) / COST_UNITS_PER_USD if name == "cost_usd"
              else fn.SUM(getattr(f, name)) for name in SUMS]
    for table, start in ((rollup, f.hour), (days, f.day), (months, f.month)):
        key = [getattr(table, start.name), *(getattr(table, n) for n in DIMENSIONS), table.paid]
        upsert(table, key, [start, *f_dims, f.paid, *totals], SUMS, len(key))
    key = [durations.hour, *(getattr(durations, n) for n in DIMENSIONS), durations.bucket]
    upsert(durations, key, [f.hour, *f_dims, f.bucket, fn.SUM(f.executions)],
           ("executions",), len(key))
    md = month_durations
    key = [md.month, md.dimension, md.value, md.bucket]
    for name in ("", *DIMENSIONS):
        value = getattr(f, name) if name else SQL("''")
        upsert(md, key, [f.month, SQL(f"'{name}'"), value, f.bucket, fn.SUM(f.executions)],
               ("executions",), 4)
    return statements


def unfold(models: Sequence[Any], model: Any, dialect: Any, where: Any) -> List[Statement]:
    """Take the executions matching ``where`` (all of them counted) out of
    their hours and months, as :func:`fold` added them; the rows and
    sketch buckets left with no execution go, so reports show no empty
    groups."""
    statements = fold(models, model, dialect, where, sign=-1)
    rollup, durations, _, months, month_durations, scratch, days = models
    database = model._meta.database
    for table, period in ((rollup, "hour"), (durations, "hour"), (days, "day"),
                          (months, "month"), (month_durations, "month")):
        column = getattr(table, period)
        touched = scratch.select(getattr(scratch, period))
        statements.append(render(database, table.delete().where(
            (table.executions == 0) & column.in_(touched))))
    return statements


def counted(model: Any, state: State) -> Optional[Any]:
    """The rows ``state`` counts (``None``: none)."""
    if state.counted_before is None:
        return None
    return (model.id <= state.counted_ids) & (
        model.created_at < format_timestamp(state.counted_before))


def uncounted(model: Any, state: State) -> Any:
    """The rows ``state`` does not count."""
    if state.counted_before is None:
        return SQL("1 = 1")
    return (model.id > state.counted_ids) | (
        model.created_at >= format_timestamp(state.counted_before))


def read_state(conn: Any, models: Sequence[Any]) -> State:
    state_model = models[2]
    database = state_model._meta.database
    sql, params = render(database, state_model.select(
        state_model.counted_ids, state_model.counted_before, state_model.purged_before
    ).where(state_model.id == 1))
    # Through a DB-API cursor: the caller's connection may be an
    # application's, whose driver has no execute() of its own (psycopg2).
    cursor = conn.cursor()
    cursor.execute(sql, params)
    row = cursor.fetchone()
    if row is None:
        return State()
    return State(int(row[0]), _time(row[1]), _time(row[2]))


def write_state(conn: Any, models: Sequence[Any], state: State, *,
                upsert: Upsert = upsert_on_conflict) -> None:
    """Set the state row, inside the caller's transaction (``upsert``: the
    engine's, ``ReportDialect.upsert``)."""
    state_model = models[2]
    database = state_model._meta.database
    values = {state_model.id: 1, state_model.counted_ids: state.counted_ids,
              state_model.counted_before: _text(state.counted_before),
              state_model.purged_before: _text(state.purged_before)}
    query = upsert(state_model.insert(values).returning(), [state_model.id],
                   [field for field in values if field is not state_model.id], False)
    conn.execute(*render(database, query))


def _time(value: Any) -> Optional[_dt.datetime]:
    return None if value is None else parse_timestamp(str(value)).replace(tzinfo=None)


def _text(value: Optional[_dt.datetime]) -> Optional[str]:
    return None if value is None else format_timestamp(value)


# The ceil functions end at the last instant Python represents: a time in
# the last hour, day or month of year 9999 (a row of another program, a
# report's bound) has no next one.
_LAST = _dt.datetime.max


def floor_hour(value: _dt.datetime) -> _dt.datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: _dt.datetime) -> _dt.datetime:
    floor = floor_hour(value)
    if floor == value:
        return floor
    return floor + _dt.timedelta(hours=1) if floor < _LAST - _dt.timedelta(hours=1) else _LAST


def floor_month(value: _dt.datetime) -> _dt.datetime:
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def ceil_month(value: _dt.datetime) -> _dt.datetime:
    floor = floor_month(value)
    if floor == value:
        return floor
    if floor.year == _LAST.year and floor.month == 12:
        return _LAST
    return (floor + _dt.timedelta(days=32)).replace(day=1)


def floor_day(value: _dt.datetime) -> _dt.datetime:
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(value: _dt.datetime) -> _dt.datetime:
    floor = floor_day(value)
    if floor == value:
        return floor
    return floor + _dt.timedelta(days=1) if floor < _LAST - _dt.timedelta(days=1) else _LAST
