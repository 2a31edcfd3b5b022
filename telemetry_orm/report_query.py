"""The SQL of a usage report, built with peewee: sums per group, nearest-rank
percentiles with a window function, and the filters. :mod:`telemetry_orm.reports`
turns the answers into report types."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Type

import peewee
from peewee import SQL, Case, ColumnBase, Entity, fn

from . import report_labels, rollups, zone_days, zones
from .checks import check_text, check_time, to_utc
from .errors import TelemetryValidationError
from .report_labels import LabelFilter
from .schema import LABELS_TABLE, Execution, format_timestamp, parse_timestamp
from .sql import bounded, cost_units
from .tables import tables_of

#: Keys a report can be grouped by, in the order they are documented.
GROUP_KEYS: Tuple[str, ...] = (
    "repo", "model", "provider", "event_type", "conclusion", "day", "week", "month", "pr",
)

#: Group keys that are time buckets (ordered ascending in a report).
TIME_KEYS: Tuple[str, ...] = ("day", "week", "month")

#: The nearest-rank percentile reported as ``p95_duration_ms``, in percent.
PERCENTILE = 95

# A group key becomes one or more columns of a row ("pr" is a repo and a PR).
_KEY_COLUMNS: Dict[str, Tuple[str, ...]] = {
    **{key: (key,) for key in GROUP_KEYS},
    "pr": ("repo", "pr_number"),
}


@dataclasses.dataclass(frozen=True)
class ReportFilters:
    """What a report was restricted to (``None``: no restriction)."""

    since: Optional[_dt.datetime] = None
    until: Optional[_dt.datetime] = None
    repo: Optional[str] = None
    model: Optional[str] = None
    event_type: Optional[str] = None
    conclusion: Optional[str] = None
    #: The IANA zone of the time buckets (``since`` and ``until`` are UTC).
    tz: str = "UTC"
    #: Labels every execution carries: (name, value) pairs, by name.
    labels: LabelFilter = ()


def key_names(group_by: Sequence[str]) -> Tuple[str, ...]:
    """The columns that identify a row of a report grouped by ``group_by``."""
    names: List[str] = []
    for key in group_by:
        names.extend(c for c in _KEY_COLUMNS.get(key, (key,)) if c not in names)
    return tuple(names)


def nearest_rank(n: int) -> int:
    """The nearest rank of :data:`PERCENTILE` among ``n`` values: ``ceil(n * p / 100)``."""
    return -(-n * PERCENTILE // 100)


def zone_offsets(database: peewee.Database, zone: Any, columns: Sequence[Any],
                 since: Optional[_dt.datetime], until: Optional[_dt.datetime],
                 ) -> List[zones.Offset]:
    """``zone``'s offsets (:func:`telemetry_orm.zones.offsets`) over the
    UTC years from ``since`` to ``until`` (open ends: the first and last
    value) in which a time column of ``columns`` (``created_at``, the
    rollups' ``hour``: indexed, each probe is one index seek) has a value.

    Years without any are skipped, so one row far from the others (another
    program's row of year 9999) costs its own year, not the thousands
    between; the offset before such a gap stands for it (it holds no row).
    """
    as_text = tables_of(database).dialect.as_text
    low = _naive(since) if since is not None else None
    high = _naive(until) if until is not None else None
    years: Set[int] = set()
    for column in columns:
        model = column.model
        after, past = (format_timestamp(low) if low else None), False
        while True:
            query = model.select(as_text(column)).where(column.is_null(False))
            if after is not None:
                query = query.where(column > after if past else column >= after)
            if high is not None:
                query = query.where(column < format_timestamp(high))
            row = database.execute(query.order_by(column).limit(1)).fetchone()
            if row is None:
                break
            try:
                year = parse_timestamp(row[0]).year
            except ValueError:  # text that is no time (a hand edit): it has no label
                after, past = row[0], True
                continue
            years.add(year)
            if year >= _dt.MAXYEAR:
                break
            after, past = format_timestamp(_dt.datetime(year + 1, 1, 1)), False
    if not years:
        now = _naive(_dt.datetime.now(_dt.timezone.utc))
        return zones.offsets(zone, low or now, high or low or now)
    found: List[zones.Offset] = []
    for first, last in _runs(sorted(years)):
        start = max(_dt.datetime(first, 1, 1), low) if low else _dt.datetime(first, 1, 1)
        end = _dt.datetime.max if last >= _dt.MAXYEAR else _dt.datetime(last + 1, 1, 1)
        # An hour starting just before ``until`` still needs its offset.
        part = zones.offsets(zone, start, min(end, _later(high)) if high else end)
        if found:  # the offset in force at the end of the last run covers the gap
            found[-1] = zones.Offset(start, found[-1].seconds)
        found.extend(part)
    return found


def _runs(years: Sequence[int]) -> List[Tuple[int, int]]:
    """Consecutive ``years`` as (first, last) runs."""
    runs: List[Tuple[int, int]] = []
    for year in years:
        if runs and runs[-1][1] == year - 1:
            runs[-1] = (runs[-1][0], year)
        else:
            runs.append((year, year))
    return runs


def _later(value: _dt.datetime) -> _dt.datetime:
    hour = _dt.timedelta(hours=1)
    return value + hour if value < _dt.datetime.max - hour else _dt.datetime.max


def _naive(value: _dt.datetime) -> _dt.datetime:
    return to_utc(value).replace(tzinfo=None)


@dataclasses.dataclass
class Sums:
    """Additive figures of a group, as the database summed them."""

    executions: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    #: In :func:`~telemetry_orm.sql.cost_units` (whole billionths of a dollar).
    cost_units: float
    duration_ms: int
    failed: int

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> Sums:
        # Engines differ in the types of sums (PostgreSQL answers Decimal).
        n, tokens_in, tokens_out, read, write, cost, duration, failed = (v or 0 for v in values)
        return cls(
            int(n), int(tokens_in), int(tokens_out), int(read), int(write),
            float(cost), int(duration), int(failed),
        )

    @classmethod
    def combine(cls, parts: Iterable[Sums]) -> Sums:
        total = cls(0, 0, 0, 0, 0, 0.0, 0, 0)
        for part in parts:
            for field in dataclasses.fields(cls):
                name = field.name
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total


@dataclasses.dataclass(frozen=True)
class CostPart:
    """The executions of one model in one group, with a recorded cost
    (``paid``: above 0) or without one."""

    model: str
    paid: bool
    executions: int
    #: Input, output, cache read, cache creation.
    tokens: Tuple[int, int, int, int]
    #: In :func:`~telemetry_orm.sql.cost_units`.
    recorded: float


class Query:
    """The SQL of one report, built with peewee from the filters and keys."""

    def __init__(
        self, *, database: peewee.Database, filters: ReportFilters, group_by: Tuple[str, ...],
        extra: Optional[ColumnBase] = None, offsets: Optional[List[zones.Offset]] = None,
    ) -> None:
        """``extra``: a condition rows must meet besides the filters (the
        rows the rollups do not stand for); ``offsets``: the zone's offsets,
        when already known."""
        self.database = database
        self.extra = extra
        tables = tables_of(database)
        self.dialect = tables.dialect
        self.model: Type[Execution] = tables.executions
        self.filters = filters
        self.key_names = key_names(group_by)
        self.zone = zones.check_zone("tz", filters.tz)
        self._offsets: Optional[List[zones.Offset]] = offsets
        # With a time range, keep the planner on the created_at index:
        # hide every other column from the indexes.
        timed = filters.since is not None or filters.until is not None
        self._hide: Callable[[ColumnBase], ColumnBase] = (
            self.dialect.no_index if timed else (lambda column: column)
        )
        self._labels: Optional[Type[Any]] = None
        if report_labels.uses_labels(self.key_names, filters.labels):
            conn = tables.engine.statements(database)
            if tables.engine.has_table(conn, LABELS_TABLE):
                self._labels = tables.labels

    def _column(self, name: str) -> ColumnBase:
        node: ColumnBase = getattr(self.model, name)
        return node

    def local_offsets(self) -> List[zones.Offset]:
        """The zone's offsets over the years of the report's range that
        hold rows, found at the first use (see :func:`zone_offsets`)."""
        if self._offsets is None:
            self._offsets = zone_offsets(self.database, self.zone, [self._column("created_at")],
                                         self.filters.since, self.filters.until)
        return self._offsets

    def _time(self) -> ColumnBase:
        """``created_at`` as the report's zone reads it."""
        created_at = self._column("created_at")
        if self.zone == zones.UTC:
            return created_at
        return self.dialect.local(created_at, self.local_offsets())

    def _keys(self) -> List[ColumnBase]:
        keys = []
        for name in self.key_names:
            label = report_labels.label_name(name)
            if label is not None:
                keys.append(report_labels.key_column(self._labels, self.model.id, label))
            elif name in self.dialect.buckets:
                keys.append(self.dialect.buckets[name](self._time()))
            else:
                # Never group through an index: walking idx_executions_repo
                # reads every row of the table in key order, slower on 1M rows
                # than scanning (or searching by time) and sorting.
                keys.append(self.dialect.no_index(self._column(name)))
        return keys

    def _where(self) -> List[ColumnBase]:
        f = self.filters
        created_at = self._column("created_at")
        conditions: List[ColumnBase] = []
        if f.since is not None:
            conditions.append(created_at >= format_timestamp(f.since))
        if f.until is not None:
            conditions.append(created_at < format_timestamp(f.until))
        for name in ("repo", "model", "event_type", "conclusion"):
            value = getattr(f, name)
            if value is not None:
                conditions.append(self._hide(self._column(name)) == value)
        conditions.extend(report_labels.filter_conditions(self._labels, self.model.id,
                                                          f.labels))
        if self.extra is not None:
            conditions.append(self.extra)
        return conditions

    def select(self, *columns: ColumnBase) -> Any:
        """``SELECT columns`` of the matching executions."""
        query = self.model.select(*columns)
        where = self._where()
        return query.where(*where) if where else query

    def _grouped(self, keys: Sequence[ColumnBase], *columns: ColumnBase) -> Any:
        """``SELECT keys…, columns…`` of the matching executions, grouped by
        the keys (aliased ``k0``, ``k1`` … so that an expression is grouped
        as selected); one row when there are no keys."""
        aliases = [f"k{i}" for i in range(len(keys))]
        query = self.select(
            *(node.alias(alias) for node, alias in zip(keys, aliases, strict=True)), *columns)
        return query.group_by(*(Entity(a) for a in aliases)) if aliases else query

    def _sums(self) -> List[ColumnBase]:
        """The executions, the four token sums and the recorded cost."""
        m = self.model
        total = self.dialect.total
        return [fn.COUNT(SQL("*")), *(total(bounded(getattr(m, name))) for name in (
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")),
                total(cost_units(bounded(m.cost_usd)))]

    def aggregate_query(self) -> Any:
        """The per-group sums (one row when there are no keys)."""
        m = self.model
        failed = Case(None, [(m.conclusion != "success", 1)], 0)
        return self._grouped(self._keys(), *self._sums(),
                             self.dialect.total(bounded(m.duration_ms)),
                             fn.SUM(failed))

    def aggregate(self) -> Dict[Tuple[Any, ...], Sums]:
        return _group_sums(self.database.execute(self.aggregate_query()), len(self.key_names))

    def cost_parts_query(self) -> Any:
        """Per group, per model, and per whether a cost was recorded (above
        0): executions, the four token sums and the recorded cost; what a
        price table turns into a calculated cost, without reading rows."""
        m = self.model
        paid = Case(None, [(m.cost_usd > 0, 1)], 0)
        return self._grouped([*self._keys(), self.dialect.no_index(m.model), paid],
                             *self._sums())

    def cost_parts(self) -> Dict[Tuple[Any, ...], List[CostPart]]:
        return _cost_part_rows(self.database.execute(self.cost_parts_query()),
                               len(self.key_names))

    def bucket_counts(self) -> BucketCounts:
        """Per group, how many durations fall in each sketch bucket
        (:func:`telemetry_orm.rollups.bucket`): to merge with the rollups'."""
        self.dialect.prepare(self.database)
        query = self._grouped([*self._keys(), self.dialect.bucket(self._column("duration_ms"))],
                              fn.COUNT(SQL("*")))
        return _bucket_rows(self.database.execute(query), len(self.key_names))

    def percentile_query(self) -> Any:
        """Per group, the smallest duration whose cumulative share reaches
        :data:`PERCENTILE` (the nearest-rank percentile)."""
        keys = self._keys()
        aliases = [f"k{i}" for i in range(len(keys))]
        duration = self._column("duration_ms")
        share = fn.CUME_DIST().over(partition_by=keys, order_by=[duration])
        inner = self.select(
            *(node.alias(alias) for node, alias in zip(keys, aliases, strict=True)),
            duration.alias("duration_ms"),
            share.alias("share"),
        )
        outer_keys = [getattr(inner.c, alias) for alias in aliases]
        return (
            inner.select_from(*outer_keys, fn.MIN(inner.c.duration_ms))
            .where(inner.c.share >= PERCENTILE / 100)
            .group_by(*outer_keys)
        )

    def group_percentiles(self) -> Dict[Tuple[Any, ...], int]:
        width = len(self.key_names)
        return {
            tuple(row[:width]): int(row[width])
            for row in self.database.execute(self.percentile_query())
        }

    def total_percentile(self, executions: int) -> Optional[int]:
        """The nearest-rank percentile of all matching durations.

        Counted from the top (``OFFSET n - rank`` descending), so the engine
        only keeps the largest 5 % while sorting.
        """
        if not executions:
            return None
        rank = nearest_rank(executions)
        duration = self._column("duration_ms")
        query = (
            self.select(duration)
            .order_by(duration.desc())
            .limit(1)
            .offset(executions - rank)
        )
        row = self.database.execute(query).fetchone()
        return None if row is None else int(row[0])


def _group_sums(rows: Iterable[Sequence[Any]], width: int) -> Dict[Tuple[Any, ...], Sums]:
    """Rows of keys then the :class:`Sums` columns, as sums per group (empty
    groups left out)."""
    groups: Dict[Tuple[Any, ...], Sums] = {}
    for row in rows:
        sums = Sums.from_row(row[width:])
        if sums.executions:
            groups[tuple(row[:width])] = sums
    return groups


def _cost_part_rows(rows: Iterable[Sequence[Any]], width: int
                    ) -> Dict[Tuple[Any, ...], List[CostPart]]:
    """Rows of keys, model, paid, executions, four token sums and the cost,
    as :class:`CostPart` lists per group."""
    parts: Dict[Tuple[Any, ...], List[CostPart]] = {}
    for row in rows:
        n, tokens_in, tokens_out, read, write, cost = (v or 0 for v in row[width + 2:])
        parts.setdefault(tuple(row[:width]), []).append(CostPart(
            str(row[width]), bool(row[width + 1]), int(n),
            (int(tokens_in), int(tokens_out), int(read), int(write)), float(cost)))
    return parts


#: Cost parts from rows of a :meth:`Query.cost_parts_query` (for budgets).
cost_part_rows = _cost_part_rows


def _summed(rollup: Any, name: str) -> ColumnBase:
    """A rollup column as a report adds it up (costs in cost units)."""
    column: ColumnBase = getattr(rollup, name)
    return cost_units(column) if name == "cost_usd" else column


#: Per group, a duration sketch: ``{bucket: count}``.
BucketCounts = Dict[Tuple[Any, ...], Dict[int, int]]


def _bucket_rows(rows: Iterable[Sequence[Any]], width: int) -> BucketCounts:
    counts: BucketCounts = {}
    last: Any = None
    group: Dict[int, int] = {}
    for row in rows:
        # A group's rows mostly come together: its dict is looked up once.
        key = tuple(row[:width])
        if key != last:
            group = counts.setdefault(key, {})
            last = key
        k = int(row[width])
        group[k] = group.get(k, 0) + int(row[width + 1])
    return counts


#: The sums table and the duration sketches table of each rollup tier.
_TIERS: Dict[str, Tuple[str, Optional[str]]] = {
    "hour": (rollups.ROLLUPS_TABLE, rollups.DURATIONS_TABLE),
    "month": (rollups.MONTHS_TABLE, rollups.MONTH_DURATIONS_TABLE),
    "day": (rollups.DAYS_TABLE, None),
    # A kept zone's local days (:mod:`telemetry_orm.zone_days`).
    "zone": (zone_days.ZONE_DAYS_TABLE, zone_days.ZONE_DAY_DURATIONS_TABLE),
    # The parts of the hours its day edges cut, by day.
    "cut": (zone_days.ZONE_CUTS_TABLE, zone_days.ZONE_CUT_DURATIONS_TABLE),
}


class RollupQuery:
    """The SQL of the part of a report the rollups stand for: whole hours
    (``tier="hour"``) or whole UTC months (``tier="month"``) in ``[lower,
    upper)`` (``None``: unbounded), with the same filters, keys and answers
    as :class:`Query`. The month tier answers only what :func:`month_dimension`
    allows; ``tier="zone"``, the days of the kept ``zone`` in ``[lower,
    upper)`` (its wall-clock midnights), only time keys without filters.

    Time keys are the zone's with ``offsets``, UTC's without. ``hours``
    keeps only those hours, ``skip`` leaves those out (the hours a zone's
    bucket edge cuts, read from rows); ``sign=-1`` takes the answers away
    instead of adding them (a UTC month's hours that are another month in
    the zone)."""

    def __init__(
        self, *, database: peewee.Database, filters: ReportFilters, group_by: Tuple[str, ...],
        lower: Optional[_dt.datetime], upper: Optional[_dt.datetime],
        offsets: Optional[List[zones.Offset]] = None, tier: str = "hour",
        hours: Optional[Sequence[_dt.datetime]] = None, skip: Sequence[_dt.datetime] = (),
        sign: int = 1, zone: Optional[str] = None,
    ) -> None:
        self.hours = None if hours is None else [format_timestamp(h) for h in hours]
        self.skip = [format_timestamp(h) for h in skip]
        self.sign = sign
        self.database = database
        tables = tables_of(database)
        self.dialect = tables.dialect
        self.tier = tier
        # The zone tier's days are the zone's already: bounds in its wall
        # time; the cut hours' parts have days, bounded by their hours.
        self.time = "day" if tier in ("zone", "cut") else tier
        self.bound = "hour" if tier == "cut" else self.time
        self.zone = zone
        sums, sketches = _TIERS[tier]
        self.rollup: Any = tables.rollup(sums)
        # The day tier has no sketches: it serves reports without p95 only.
        self.durations: Any = tables.rollup(sketches) if sketches else None
        self.filters = filters
        self.key_names = key_names(group_by)
        self.lower, self.upper = lower, upper
        self.offsets = offsets
        self.dimension = _one_column(filters, group_by) if tier == "month" else None

    def _keys(self, model: Any, *, marginal: bool = False) -> List[ColumnBase]:
        start = getattr(model, self.time)
        if self.offsets is not None and zones.check_zone("tz", self.filters.tz) != zones.UTC:
            start = self.dialect.local(start, self.offsets)
        # A label's value, or (marginal) the value of the month tier's column.
        return [self.dialect.buckets[name](start) if name in self.dialect.buckets
                else model.value if marginal or name.startswith(report_labels.PREFIX)
                else getattr(model, name) for name in self.key_names]

    def _select(self, model: Any, keys: Sequence[ColumnBase], *columns: ColumnBase,
                marginal: bool = False) -> Any:
        aliases = [f"k{i}" for i in range(len(keys))]
        query = model.select(
            *(node.alias(alias) for node, alias in zip(keys, aliases, strict=True)), *columns)
        start = getattr(model, self.bound)
        conditions = []
        if self.lower is not None:
            conditions.append(start >= format_timestamp(self.lower))
        if self.upper is not None:
            conditions.append(start < format_timestamp(self.upper))
        if self.hours is not None:
            conditions.append(start.in_(self.hours))
        if self.skip:
            conditions.append(start.not_in(self.skip))
        if marginal:
            conditions.append(model.dimension == (self.dimension or ""))
        if self.zone is not None:
            conditions.append(model.zone == self.zone)
        for name in ("repo", "model", "event_type", "conclusion"):
            value = getattr(self.filters, name)
            if value is not None:
                conditions.append((model.value if marginal else getattr(model, name)) == value)
        if conditions:
            query = query.where(*conditions)
        return query.group_by(*(Entity(a) for a in aliases)) if aliases else query

    def _by_local_time(self, model: Any, extra: Sequence[ColumnBase],
                       columns: Sequence[ColumnBase], again: Callable[[Any], ColumnBase]
                       ) -> Any:
        """``SELECT keys…, extra…, columns…`` grouped, as :meth:`_select`.
        With local time keys, summed per hour first, then the hours into the
        zone's buckets (``again``: how a sum is summed again), so the zone's
        offsets are added to each hour once rather than to each of its rows."""
        keys = self._keys(model)
        buckets = self.dialect.buckets
        if self.offsets is None or not any(name in buckets for name in self.key_names):
            return self._select(model, [*keys, *extra], *columns)
        plain = [key for name, key in zip(self.key_names, keys, strict=True)
                 if name not in buckets]
        inner = self._select(model, [getattr(model, self.time), *plain, *extra],
                             *(c.alias(f"s{i}") for i, c in enumerate(columns)))
        start = self.dialect.local(inner.c.k0, self.offsets)
        others = iter(range(1, 1 + len(plain)))
        outer_keys = [buckets[name](start) if name in buckets
                      else getattr(inner.c, f"k{next(others)}") for name in self.key_names]
        outer_keys += [getattr(inner.c, f"k{1 + len(plain) + i}") for i in range(len(extra))]
        # Other names than the inner columns': GROUP BY k0 would be the hour.
        aliases = [f"g{i}" for i in range(len(outer_keys))]
        return inner.select_from(
            *(node.alias(alias) for node, alias in zip(outer_keys, aliases, strict=True)),
            *(again(getattr(inner.c, f"s{i}")) for i in range(len(columns))),
        ).group_by(*(Entity(a) for a in aliases))

    def aggregate(self) -> Dict[Tuple[Any, ...], Sums]:
        r = self.rollup
        total = self.dialect.total
        query = self._by_local_time(r, (), [total(_summed(r, name)) for name in (
            "executions", "input_tokens", "output_tokens", "cache_read_tokens",
            "cache_creation_tokens", "cost_usd", "duration_ms", "failed")], total)
        groups = _group_sums(self.database.execute(query), len(self.key_names))
        if self.sign == 1:
            return groups
        return {key: Sums(*(-getattr(sums, f.name) for f in dataclasses.fields(Sums)))
                for key, sums in groups.items()}

    def cost_parts(self) -> Dict[Tuple[Any, ...], List[CostPart]]:
        r = self.rollup
        total = self.dialect.total
        query = self._by_local_time(r, (r.model, r.paid), [
            total(_summed(r, name)) for name in (
                "executions", "input_tokens", "output_tokens", "cache_read_tokens",
                "cache_creation_tokens", "cost_usd")], total)
        parts = _cost_part_rows(self.database.execute(query), len(self.key_names))
        if self.sign == 1:
            return parts
        return {key: [CostPart(p.model, p.paid, -p.executions, (
            -p.tokens[0], -p.tokens[1], -p.tokens[2], -p.tokens[3]), -p.recorded)
            for p in group] for key, group in parts.items()}

    def bucket_counts(self) -> BucketCounts:
        d = self.durations
        if self.tier in ("zone", "cut") and set(self.key_names) <= set(_LABELS):
            return self._day_sketches()
        marginal = self.tier == "month"
        # Not summed per hour first (:meth:`_by_local_time`): an hour's
        # sketch has as many buckets as the hour has rows at a team's pace,
        # and grouping by hour and bucket first measured slower.
        query = self._select(d, [*self._keys(d, marginal=marginal), d.bucket],
                             fn.SUM(d.executions), marginal=marginal)
        counts = _bucket_rows(self.database.execute(query), len(self.key_names))
        if self.sign == 1:
            return counts
        return {key: {k: -n for k, n in group.items()} for key, group in counts.items()}


    def _day_sketches(self) -> BucketCounts:
        """The sketches of a zone's days by day, week or month: their rows
        as they are, one per day and bucket in key order, each day
        labelled once here (labels made and grouped by in SQL for each row
        took longer than reading them: at a team's pace a day holds
        hundreds of buckets)."""
        d = self.durations
        counts: BucketCounts = {}
        last: Any = None
        group: Dict[int, int] = {}
        for day, k, n in self.database.execute(self._select(d, [], d.day, d.bucket,
                                                            d.executions)):
            if day != last:
                date = _stored_date(day)
                group = counts.setdefault(tuple(_LABELS[name](date)
                                                for name in self.key_names), {})
                last = day
            group[int(k)] = group.get(int(k), 0) + int(n)
        return counts


def _stored_date(value: Any) -> _dt.date:
    """A stored day (UTC text, or a datetime in any session zone) as its date."""
    if isinstance(value, str):
        return _dt.date.fromisoformat(value[:10])
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc)
    return value.date()  # type: ignore[no-any-return]


def _iso_week(iso: Tuple[int, int, int]) -> str:
    return f"{iso[0]}-W{iso[1]:02d}"


#: The time buckets' labels, as every engine's ``buckets`` spell them.
_LABELS: Dict[str, Callable[[_dt.date], str]] = {
    "day": lambda date: date.isoformat(),
    "week": lambda date: _iso_week(date.isocalendar()),
    "month": lambda date: date.isoformat()[:7],
}


def month_dimension(filters: ReportFilters, group_by: Sequence[str]) -> Optional[str]:
    """The one column the month tier's sketches must be read by (``""``:
    none), or ``None`` when that tier cannot answer the report: time
    buckets finer than a month, months in a zone other than UTC, or more
    than one column among the keys and the filters (a sketch per value of
    one column cannot be split by another)."""
    if "month" in group_by and filters.tz != "UTC":
        return None
    return _one_column(filters, group_by)


def _one_column(filters: ReportFilters, group_by: Sequence[str]) -> Optional[str]:
    """:func:`month_dimension` for months in UTC, whatever the zone."""
    if any(key in ("day", "week", "pr") for key in group_by):
        return None
    columns = {key for key in group_by if key != "month"}
    columns |= {name for name in ("repo", "model", "event_type", "conclusion")
                if getattr(filters, name) is not None}
    if len(columns) > 1:
        return None
    return columns.pop() if columns else ""


def in_hours(column: ColumnBase, hours: Sequence[_dt.datetime]) -> Optional[ColumnBase]:
    """``column`` (``created_at``) inside one of ``hours`` (their starts),
    as index ranges OR-ed in a balanced tree (no deep nesting to render);
    ``None`` for no hours."""
    ranges = [(column >= format_timestamp(h)) & (column < format_timestamp(h + _HOUR))
              for h in hours]
    while len(ranges) > 1:
        ranges = [a | b for a, b in zip(ranges[::2], ranges[1::2], strict=False)] + (
            [ranges[-1]] if len(ranges) % 2 else [])
    return ranges[0] if ranges else None


_HOUR = _dt.timedelta(hours=1)


def checked_filters(**values: Any) -> ReportFilters:
    """Report filters from keyword values, each checked (``since`` before ``until``)."""
    filters = ReportFilters(
        since=check_time("since", values.pop("since", None)),
        until=check_time("until", values.pop("until", None)),
        labels=report_labels.checked_filter(values.pop("labels", None)),
        **{name: check_text(name, value) for name, value in values.items()},  # type: ignore[arg-type]
    )
    if filters.since and filters.until and filters.until <= filters.since:
        raise TelemetryValidationError(
            "until", f"must be later than since ({filters.since.isoformat()}), "
            f"got {filters.until.isoformat()}"
        )
    return filters


def database_name(database: peewee.Database) -> str:
    """The file a database object reads, for error messages."""
    name = str(database.database)
    if name.startswith("file:"):
        name = urllib.parse.unquote(name[len("file:"):].partition("?")[0])
    return name
