"""Rollups: what every execution added up to, per UTC hour, kept beside
``executions`` so that history outlives the purge and long reports read
hours instead of rows.

The hour tier, two tables and a state row, beside ``executions`` (which
stays the original's):

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

The day and month tiers, for reports over many days or months:
``telemetry_orm_daily`` and ``telemetry_orm_monthly`` (the sums per UTC day
or month and combination) and ``telemetry_orm_monthly_durations`` (a UTC
month's sketch per value of one column). They are built from the hour tier,
behind it: ``telemetry_orm_rollup_tiers`` records the hour ``built_before``
which they hold exactly what the hours hold, and after which they hold
nothing. A fold adds rows to the hours only, and to the tiers as well only
the rows of hours before ``built_before`` (late rows, a replaced row, a
purge below it); :func:`build_tiers` then adds a stretch of hours to the
tiers and moves ``built_before`` past it, in one transaction. Reports read
the tiers before ``built_before`` and the hours after it. Building from the
hours reads each hour row once for each tier, where folding every row into
every tier as it came upserted each row nine times.

A row is counted once: folding in moves the state forward and adds exactly
the rows between the old state and the new one, in the same transaction.
Rows that arrive later with an old ``created_at`` (imports, copies, clock
skew) have ids past ``counted_ids``, so they are not counted yet, and the
next fold adds them to their hour. A purge first folds the hours of the
rows it is to delete in as :func:`telemetry_orm.folding.fold_up` does (up
to the end of its cutoff's hour), then folds whatever its chunks still find
uncounted (rows that arrived meanwhile) in the transaction that deletes
them. A keyed write that replaces
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
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from peewee import (
    EXCLUDED,
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
    Hole,
    Statement,
    Template,
    Upsert,
    bounded,
    cost_units,
    render,
    rendered_once,
    upsert_on_conflict,
)

__all__ = [
    "ALPHA", "DAYS_TABLE", "DIMENSIONS", "DURATIONS_TABLE", "GAMMA", "LEGACY_TABLES",
    "MONTHS_TABLE", "MONTH_DURATIONS_TABLE", "ROLLUPS_TABLE", "STATE_TABLE", "TIERS_TABLE",
    "Rollup", "RollupDay", "RollupDuration", "RollupModels", "RollupMonth",
    "RollupMonthDuration", "RollupResult", "RollupState", "RollupTiers", "State", "bucket",
    "bucket_value", "build_tiers", "estimate", "fold", "unfold",
]

ROLLUPS_TABLE = "telemetry_orm_rollups"
DURATIONS_TABLE = "telemetry_orm_rollup_durations"
STATE_TABLE = "telemetry_orm_rollup_state"
#: The day and month tiers, built from the hours (see the module).
DAYS_TABLE = "telemetry_orm_daily"
MONTHS_TABLE = "telemetry_orm_monthly"
MONTH_DURATIONS_TABLE = "telemetry_orm_monthly_durations"
TIERS_TABLE = "telemetry_orm_rollup_tiers"
#: The day and month tiers of earlier versions, which folded every row into
#: them as it went: dropped once the tiers above are built.
LEGACY_TABLES = ("telemetry_orm_rollup_days", "telemetry_orm_rollup_months",
                 "telemetry_orm_rollup_month_durations")

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
    #: The zones whose days are kept (:mod:`telemetry_orm.zone_days`), by name.
    zones: Tuple[str, ...] = ()


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


class RollupState(Model):
    """The one row saying which rows are counted (times as UTC text)."""

    id = IntegerField(primary_key=True)
    counted_ids = BigIntegerField()
    counted_before = TimeTextField(null=True)
    purged_before = TimeTextField(null=True)

    class Meta:
        table_name = STATE_TABLE


class RollupTiers(Model):
    """The one row saying which hours the day and month tiers hold: exactly
    what the hours before ``built_before`` hold, and nothing of the hours
    from it on (``None``: nothing yet)."""

    id = IntegerField(primary_key=True)
    built_before = TimeTextField(null=True)

    class Meta:
        table_name = TIERS_TABLE


class RollupModels(NamedTuple):
    """The rollup models of one database, bound to it (an engine's
    ``rollup_models`` in this order)."""

    hours: Any
    hour_durations: Any
    state: Any
    months: Any
    month_durations: Any
    days: Any
    tiers: Any
    #: The kept zones' days (:mod:`telemetry_orm.zone_days`).
    zone_days: Any
    zone_day_durations: Any
    zones: Any
    zone_cuts: Any
    zone_cut_durations: Any
    #: The labels' hours (:mod:`telemetry_orm.label_rollups`).
    label_hours: Any
    label_durations: Any


#: The rollup models in the order of :class:`RollupModels`.
MODELS: Tuple[Any, ...] = (
    Rollup, RollupDuration, RollupState, RollupMonth, RollupMonthDuration, RollupDay,
    RollupTiers)


# --- SQL ------------------------------------------------------------------------
#
# ``models`` are the bound rollup models and ``model`` the ``Execution`` model,
# all bound to one database; ``dialect`` is its engine's ReportDialect. The
# statements are rendered for the driver's own connection, as in
# :mod:`telemetry_orm.sql`, so they run inside a backend's own transactions.


def _by(n: int) -> List[Any]:
    return [SQL(str(i)) for i in range(1, n + 1)]


def _upsert(dialect: Any, target: Any, key: Sequence[Any], query: Any,
            added: Sequence[str]) -> Any:
    """``INSERT INTO target SELECT …`` adding ``added`` to the rows whose
    ``key`` is taken; each engine spells that its own way."""
    sums = [getattr(target, name) for name in added]
    return dialect.upsert(target.insert_from(query, [*key, *sums]), key, sums, True)


def row_sums(m: Any) -> List[Any]:
    """The :data:`SUMS` of the ``executions`` rows a grouped query reads,
    as a fold adds them up (bounded values, costs in whole cost units)."""
    failed = Case(None, [(m.conclusion != "success", 1)], 0)
    return [fn.COUNT(SQL("*")), *(fn.SUM(bounded(getattr(m, name))) for name in SUMS[1:5]),
            fn.SUM(cost_units(bounded(m.cost_usd))) / COST_UNITS_PER_USD,
            fn.SUM(bounded(m.duration_ms)), fn.SUM(failed)]


def summed_again(r: Any) -> List[Any]:
    """The :data:`SUMS` of rollup rows ``r`` (an hour tier's) added up for
    a coarser one: costs in whole cost units, so the dollars stay exact."""
    return [fn.SUM(cost_units(r.cost_usd)) / COST_UNITS_PER_USD if name == "cost_usd"
            else fn.SUM(getattr(r, name)) for name in SUMS]


def add_each(query: Any, key: Sequence[Any], fields: Sequence[Any]) -> Any:
    """``query`` (an INSERT of one row per execution) adding each row's
    ``fields`` to the row with its ``key``, spelled ``ON CONFLICT`` (SQLite's
    ``ReportDialect.add_rows``). A cost stays on the grid of whole cost units as it adds up, so
    that the dollars kept are the exact sum a report takes back."""
    update = {}
    for field in fields:
        added = field + getattr(EXCLUDED, field.column_name)
        update[field] = (fn.ROUND(added * COST_UNITS_PER_USD) / COST_UNITS_PER_USD
                         if field.name == "cost_usd" else added)
    return query.on_conflict(conflict_target=list(key), update=update)


def _fold_queries(models: RollupModels, model: Any, dialect: Any, where: Any,
                  tiers: Optional[Any], sign: int) -> List[Any]:
    """Add the executions matching ``where`` to their hours: one upsert
    from ``executions`` per hour table. The rows also matching ``tiers``
    (those in hours the day and month tiers are built for) go to those
    tiers too, the same way. ``sign=-1`` takes them out instead: see
    :func:`unfold`.

    Where the engine adds up rows as they come (``dialect.add_rows``,
    SQLite), each execution is upserted as it is: the rows come in time
    order, so the upserts land together at the end of each table, which
    measured twice as fast as sorting them into groups first. Elsewhere
    (PostgreSQL cannot upsert one key twice in a statement) they are
    grouped first."""
    m = model
    dims = [getattr(m, name) for name in DIMENSIONS]
    paid = Case(None, [(m.cost_usd > 0, 1)], 0)
    failed = Case(None, [(m.conclusion != "success", 1)], 0)
    each = dialect.add_rows is not None
    signed = (lambda value: value) if sign == 1 else (
        lambda value: value * SQL(str(int(sign))))
    # Costs added in cost units (exact), kept in dollars, from which a
    # report takes the same units back.
    values: List[Any] = [
        SQL("1"), *(bounded(getattr(m, name)) for name in SUMS[1:5]),
        cost_units(bounded(m.cost_usd)), bounded(m.duration_ms), failed]
    if each:
        values[5] = values[5] / COST_UNITS_PER_USD
        sums = [signed(v) for v in values]
        count: Any = signed(SQL("1"))
    else:
        sums = [signed(v) for v in row_sums(m)]
        count = signed(fn.COUNT(SQL("*")))
    statements: List[Any] = []

    def upsert(target: Any, key: List[Any], columns: Sequence[Any], rows: Any,
               added: Sequence[str]) -> None:
        fields = [getattr(target, name) for name in added]
        query = m.select(*columns).where(rows)
        if each:
            statements.append(dialect.add_rows(
                target.insert_from(query, [*key, *fields]), key, fields))
            return
        statements.append(_upsert(dialect, target, key, query.group_by(*_by(len(key))), added))

    def add(target: Any, start: str, at: Any, rows: Any) -> None:
        key = [getattr(target, start), *(getattr(target, n) for n in DIMENSIONS), target.paid]
        upsert(target, key, [at(m.created_at), *dims, paid, *sums], rows, SUMS)

    add(models.hours, "hour", dialect.hour, where)
    d = models.hour_durations
    upsert(d, [d.hour, *(getattr(d, n) for n in DIMENSIONS), d.bucket],
           [dialect.hour(m.created_at), *dims, dialect.bucket(m.duration_ms), count], where,
           ("executions",))
    if tiers is None:
        return statements
    rows = where & tiers
    add(models.days, "day", dialect.day, rows)
    add(models.months, "month", dialect.month, rows)
    md = models.month_durations
    for name in ("", *DIMENSIONS):
        value = getattr(m, name) if name else SQL("''")
        upsert(md, [md.month, md.dimension, md.value, md.bucket],
               [dialect.month(m.created_at), SQL(f"'{name}'"), value,
                dialect.bucket(m.duration_ms), count], rows, ("executions",))
    return statements


def _unfold_queries(models: RollupModels, model: Any, dialect: Any, where: Any,
                    tiers: Optional[Any]) -> List[Any]:
    """Take the executions matching ``where`` (all of them counted) out of
    their hours (and of the tiers, those matching ``tiers``), as
    :func:`fold` added them; the rows and sketch buckets left with no
    execution go, so reports show no empty groups. Run before the rows
    change: the periods touched are read from them."""
    statements = _fold_queries(models, model, dialect, where, tiers, -1)
    m = model
    emptied = [(models.hours, "hour", dialect.hour, where),
               (models.hour_durations, "hour", dialect.hour, where)]
    if tiers is not None:
        emptied += [(models.days, "day", dialect.day, where & tiers),
                    (models.months, "month", dialect.month, where & tiers),
                    (models.month_durations, "month", dialect.month, where & tiers)]
    for table, period, at, rows in emptied:
        touched = m.select(at(m.created_at)).where(rows)
        statements.append(table.delete().where(
            (table.executions == 0) & getattr(table, period).in_(touched)))
    return statements


#: Per bound ``Execution`` model: the fold and unfold statements rendered
#: once with their conditions left open, and the shapes of conditions (their
#: SQL) seen to fill them exactly as the statements render with them.
_TEMPLATES: weakref.WeakKeyDictionary[Any, Dict[Any, Any]] = weakref.WeakKeyDictionary()
#: Shapes remembered per statement kind, at most (conditions naming lists
#: of ids have a shape per length).
_SHAPES = 256


def _filled(kind: Any, models: RollupModels, model: Any, where: Any, tiers: Optional[Any],
            build: Callable[[Any, Optional[Any]], List[Any]]) -> List[Statement]:
    """The statements ``build(where, tiers)`` makes, rendered: from their
    templates, rendering only the conditions, once a condition of the same
    shape has been seen to give the very statements built whole."""
    database = model._meta.database
    cache = _TEMPLATES.setdefault(model, {})
    key = (kind, tiers is not None, models.hours)
    entry = cache.get(key)
    if entry is None:
        made = [Template(database, model, query) for query in build(
            Hole("where"), None if tiers is None else Hole("tiers"))]
        entry = cache[key] = (made, set())
    templates: List[Template] = entry[0]
    shapes: Set[Tuple[Tuple[str, str], ...]] = entry[1]
    conditions = {"where": where} if tiers is None else {"where": where, "tiers": tiers}
    rendered = {name: templates[0].condition(c) for name, c in conditions.items()}
    shape = tuple(sorted((name, sql) for name, (sql, _) in rendered.items()))
    if shape in shapes:
        return [t.fill_rendered(rendered) for t in templates]
    direct = [render(database, query) for query in build(where, tiers)]
    if [t.fill_rendered(rendered) for t in templates] == direct:
        if len(shapes) >= _SHAPES:
            shapes.clear()
        shapes.add(shape)
    return direct


def fold(models: RollupModels, model: Any, dialect: Any, where: Any, *,
         tiers: Optional[Any] = None, sign: int = 1) -> List[Statement]:
    """Add the executions matching ``where`` to their hours, and those also
    matching ``tiers`` to the day and month tiers (see
    :func:`_fold_queries`); ``sign=-1`` takes them out (see :func:`unfold`)."""
    return _filled(("fold", sign), models, model, where, tiers, lambda w, t: _fold_queries(
        models, model, dialect, w, t, sign))


def unfold(models: RollupModels, model: Any, dialect: Any, where: Any, *,
           tiers: Optional[Any] = None) -> List[Statement]:
    """Take the executions matching ``where`` (all of them counted) out of
    the rollups, as :func:`fold` added them (see :func:`_unfold_queries`)."""
    return _filled(("unfold",), models, model, where, tiers, lambda w, t: _unfold_queries(
        models, model, dialect, w, t))


def build_tiers(models: RollupModels, dialect: Any, start: _dt.datetime, end: _dt.datetime
                ) -> List[Statement]:
    """Add the hours in ``[start, end)`` to the day and month tiers: their
    sums from the hour sums, the month sketches from the hours' sketches,
    one grouped upsert per table (the periods that straddle ``start``
    already hold its earlier hours)."""
    r, d = models.hours, models.hour_durations
    database = r._meta.database
    lower, upper = format_timestamp(start), format_timestamp(end)
    sums = summed_again(r)
    dims = [getattr(r, name) for name in DIMENSIONS]
    statements = []
    for target, period, at in ((models.days, "day", dialect.day),
                               (models.months, "month", dialect.month)):
        key = [getattr(target, period), *(getattr(target, n) for n in DIMENSIONS),
               target.paid]
        query = r.select(at(r.hour), *dims, r.paid, *sums).where(
            (r.hour >= lower) & (r.hour < upper)).group_by(*_by(len(key)))
        statements.append(render(database, _upsert(dialect, target, key, query, SUMS)))
    md = models.month_durations
    key = [md.month, md.dimension, md.value, md.bucket]
    for name in ("", *DIMENSIONS):
        value = getattr(d, name) if name else SQL("''")
        statements.append(render(database, _upsert(dialect, md, key, d.select(
            dialect.month(d.hour), SQL(f"'{name}'"), value, d.bucket, fn.SUM(d.executions)
        ).where((d.hour >= lower) & (d.hour < upper)).group_by(*_by(4)), ("executions",))))
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
    sql, params = rendered_once(state_model, "read_state", lambda: state_model.select(
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


def read_tiers(conn: Any, models: RollupModels) -> Optional[_dt.datetime]:
    """The hour the day and month tiers are built up to (``None``: none)."""
    tiers = models.tiers
    sql, params = rendered_once(tiers, "read_tiers", lambda: tiers.select(
        tiers.built_before).where(tiers.id == 1))
    cursor = conn.cursor()
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return None if row is None else _time(row[0])


def write_tiers(conn: Any, models: RollupModels, built_before: _dt.datetime, *,
                upsert: Upsert = upsert_on_conflict) -> None:
    """Record that the tiers are built up to ``built_before``, inside the
    caller's transaction."""
    tiers = models.tiers
    query = upsert(tiers.insert({tiers.id: 1, tiers.built_before: _text(built_before)})
                   .returning(), [tiers.id], [tiers.built_before], False)
    conn.execute(*render(tiers._meta.database, query))


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
