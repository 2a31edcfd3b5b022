"""Usage reports: what the agents cost, where, and how they did.

:func:`report` aggregates ``executions`` into plain dataclasses, grouped by
any of :data:`GROUP_KEYS` and filtered by time and by column values::

    >>> import datetime as dt
    >>> from telemetry_orm import create_telemetry_store
    >>> with create_telemetry_store(":memory:") as store:
    ...     result = store.report(since=dt.datetime(2025, 1, 1), group_by=["day", "model"])
    >>> result.totals.executions
    0

Conventions (the same for every group and for the totals):

- ``total_tokens`` is ``input_tokens + output_tokens + cache_read_tokens +
  cache_creation_tokens``. Anthropic's ``input_tokens`` excludes the tokens
  read from or written to the prompt cache, so the four never overlap.
- ``failed`` counts executions whose ``conclusion`` is anything but
  ``'success'``.
- ``p95_duration_ms`` is the nearest-rank 95th percentile: the duration at
  rank ``ceil(0.95 * n)`` among the ``n`` durations sorted ascending, i.e. the
  smallest duration that at least 95 % of the executions do not exceed. It is
  always one of the recorded durations (with fewer than 20 executions, the
  largest). It is computed in the database with a window function, so no
  durations are loaded into Python. Where rolled-up hours are counted
  (:mod:`telemetry_orm.rollups`) it is estimated within 1 % from duration
  sketches instead.
- ``cost_usd`` is rounded to a millionth of a dollar, ``avg_duration_ms`` to a
  tenth of a millisecond.
- Time buckets are UTC unless ``tz`` names a zone: ``day`` ``YYYY-MM-DD``, ``week`` the ISO week
  ``YYYY-Www`` (weeks start on Monday; week 1 holds the year's first
  Thursday), ``month`` ``YYYY-MM``. ``since`` is inclusive, ``until``
  exclusive, both compared to the second.

Reports only read. :func:`open_readonly` opens a database file so that
nothing can be created or changed, and the queries of one report run in one
read transaction (one consistent snapshot, ``REPEATABLE READ`` on PostgreSQL;
in WAL mode writers carry on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import os
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import peewee

from . import prices as _prices
from . import zones
from .engines import backend_for
from .errors import DatabaseError, TelemetryValidationError
from .report_labels import label_name
from .report_plan import plan_report
from .report_query import (
    GROUP_KEYS,
    PERCENTILE,
    TIME_KEYS,
    CostPart,
    Query,
    ReportFilters,
    Sums,
    checked_filters,
    database_name,
    nearest_rank,
)
from .rollups import estimate
from .sql import COST_UNITS_PER_USD, usd
from .stats import (
    DatabaseStats,
    count_older_than,
    database_stats,
    export_rows,
    unpriced_models,
)
from .tables import tables_of

__all__ = [
    "GROUP_KEYS", "METRICS", "PERCENTILE", "TIME_KEYS", "DatabaseStats", "Metrics", "Report",
    "ReportFilters", "ReportRow", "count_older_than", "database_stats", "export_rows",
    "COST_MODES", "open_readonly", "report", "unpriced_models",
]


@dataclasses.dataclass(frozen=True)
class Metrics:
    """The figures of one group of executions (or of all of them)."""

    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    #: The sum of the four token counts above.
    total_tokens: int = 0
    #: ``None`` when the cost is calculated and no execution had a price.
    cost_usd: Optional[float] = 0.0
    #: ``None`` when there are no executions.
    avg_duration_ms: Optional[float] = None
    #: Nearest-rank 95th percentile; ``None`` when there are no executions.
    p95_duration_ms: Optional[int] = None
    #: Executions whose conclusion is not ``'success'``.
    failed: int = 0

    def as_dict(self) -> Dict[str, Any]:
        """The metrics as a ``dict``, in :data:`METRICS` order."""
        return dataclasses.asdict(self)


#: Where a report's ``cost_usd`` comes from: as recorded; calculated from
#: the tokens with a price table; or the recorded cost where it is above 0,
#: calculated where it is 0.
COST_MODES: Tuple[str, ...] = ("recorded", "calculated", "auto")

#: Metric names, in the order reports show them.
METRICS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Metrics))


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One group: its key values (``keys``, e.g. ``{"repo": "acme/api"}``) and
    its :class:`Metrics`."""

    keys: Mapping[str, Any]
    metrics: Metrics

    def as_dict(self) -> Dict[str, Any]:
        """Keys then metrics, flat: ``{"repo": …, "executions": …, …}``."""
        return {**self.keys, **self.metrics.as_dict()}


@dataclasses.dataclass(frozen=True)
class Report:
    """The answer of :func:`report`.

    ``key_names`` are the columns that identify a row (``group_by`` with
    ``pr`` expanded to ``repo`` and ``pr_number``). ``rows`` come with time
    buckets ascending, then by ``cost_usd`` descending.
    """

    generated_at: _dt.datetime
    filters: ReportFilters
    group_by: Tuple[str, ...]
    key_names: Tuple[str, ...]
    rows: Tuple[ReportRow, ...]
    totals: Metrics
    #: Where ``cost_usd`` comes from: :data:`COST_MODES`.
    cost: str = "recorded"
    #: Executions left unpriced (their model has no price), by model; their
    #: cost counts nowhere. Empty with ``cost="recorded"``.
    unpriced: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: Some of it came from the rollups: ``p95_duration_ms`` is then an
    #: estimate within 1 % (see :mod:`telemetry_orm.rollups`) where a group
    #: has rolled-up hours, and for the totals.
    from_rollups: bool = False
    #: Executions before this time were purged and this report could not
    #: count them (grouped by ``pr``, or with ``use_rollups=False``).
    incomplete_before: Optional[_dt.datetime] = None
    #: In purged history before this time, an hour that a bucket edge of the
    #: zone cuts (``tz`` off the whole hour, such as Asia/Kolkata) counts
    #: whole in the bucket where it starts: its rows are gone, and the
    #: rollups keep whole hours. ``None``: every such hour was split exactly.
    whole_hours_before: Optional[_dt.datetime] = None


# --- Opening a database for reading ---------------------------------------------


def open_readonly(path: Union[str, os.PathLike[str]]) -> peewee.Database:
    """Open the telemetry database at ``path`` for reading only.

    ``path`` is a file path or a database URL (``sqlite:///path``,
    ``postgresql://…``). Nothing is created: a missing file raises
    :class:`~telemetry_orm.DatabaseError` naming the path. A file is opened
    with ``mode=ro``, so it cannot be changed (SQLite may leave empty
    ``-wal``/``-shm`` files beside a WAL database); a PostgreSQL session is
    opened read-only (``default_transaction_read_only``). A database without
    a usable ``executions`` table is refused with a clear error. Close it
    with ``database.close()``.
    """
    return backend_for(os.fspath(path)).open_readonly()


# --- Reports --------------------------------------------------------------------


def report(
    source: Any,
    *,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    repo: Optional[str] = None,
    model: Optional[str] = None,
    event_type: Optional[str] = None,
    conclusion: Optional[str] = None,
    group_by: Union[str, Sequence[str]] = ("repo",),
    cost: str = "recorded",
    prices: Optional[Mapping[str, Any]] = None,
    tz: Any = "UTC",
    use_rollups: bool = True,
    p95: bool = True,
    labels: Optional[Mapping[str, str]] = None,
) -> Report:
    """Aggregate the executions of ``source`` (a store or a peewee database).

    ``cost``: ``"recorded"`` sums ``cost_usd`` as stored; ``"calculated"``
    prices every execution's tokens with ``prices`` (default: the price table
    in use, :func:`telemetry_orm.prices.default_prices`); ``"auto"`` keeps a
    recorded cost above 0 and calculates where it is 0. The calculation runs
    per group and model in the database. Executions whose model has no price
    are never counted as $0: a group wholly of them has ``cost_usd`` ``None``,
    and :attr:`Report.unpriced` counts them by model.

    ``p95=False`` leaves ``p95_duration_ms`` out (``None``), and its
    queries with it: for figures that do not need it, such as a chart's.

    ``tz`` is the IANA time zone (a name or a :class:`zoneinfo.ZoneInfo`)
    of the ``day``, ``week`` and ``month`` buckets and of naive ``since`` and
    ``until``: each execution falls in the bucket of its local date, with the
    offset in force at that instant (days of 23 and 25 hours where clocks
    change).

    ``since``/``until`` are datetimes (naive ones are wall times in ``tz``,
    UTC by default; ``until`` is exclusive); ``repo``, ``model``,
    ``event_type`` and ``conclusion`` keep only rows with that exact value.
    ``group_by`` is one key or a sequence of :data:`GROUP_KEYS` and
    ``label:NAME`` keys (an execution's value of label ``NAME``: ``None``
    for those without it); an empty sequence gives totals only.
    ``labels`` (``{"team": "platform"}``) keeps only the executions that
    carry every one of those labels. Invalid
    arguments raise :class:`~telemetry_orm.TelemetryValidationError` naming
    the argument.
    """
    if not isinstance(source, peewee.Database) and hasattr(source, "reading"):
        # A store: its database, read the way the store allows.
        with source.reading() as database:
            return report(
                database, since=since, until=until, repo=repo, model=model,
                event_type=event_type, conclusion=conclusion, group_by=group_by,
                cost=cost, prices=prices, tz=tz, use_rollups=use_rollups, p95=p95,
                labels=labels,
            )
    if not isinstance(source, peewee.Database):
        raise TelemetryValidationError(
            "source", f"must be a telemetry store or a peewee database, got {type(source).__name__}"
        )
    zone = zones.check_zone("tz", tz)
    filters = dataclasses.replace(checked_filters(
        since=_in_zone(since, zone), until=_in_zone(until, zone), repo=repo, model=model,
        event_type=event_type, conclusion=conclusion, labels=labels,
    ), tz=zones.zone_name(zone))
    keys = _check_group_by(group_by)
    if cost not in COST_MODES:
        raise TelemetryValidationError(
            "cost", f"must be one of {', '.join(COST_MODES)}, got {cost!r}")
    table = None
    if cost != "recorded":
        table = prices if prices is not None else _prices.default_prices()
        if not isinstance(table, _prices.PriceTable):
            table = _prices.PriceTable(table)
    generated_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    try:
        # One read transaction: every query sees the same snapshot, so the
        # rows, their percentiles and the totals agree while others write.
        engine = tables_of(source).engine
        # Inside a transaction of the caller's, the report reads in it.
        # (One opened below peewee, a store's own, is one peewee cannot nest in.)
        nested = engine.in_transaction(source)
        with contextlib.nullcontext() if nested else source.atomic():
            if not nested:
                engine.snapshot(source)
            plan = plan_report(source, filters, keys, use_rollups, p95)
            query = Query(database=source, filters=filters, group_by=keys, offsets=plan.offsets)
            if plan.raw_rows is not None:
                query.extra = plan.raw_rows(query.model)
            groups = query.aggregate()
            percentiles: Dict[Tuple[Any, ...], int] = {}
            parts = query.cost_parts() if table is not None else {}
            rolled: Dict[Tuple[Any, ...], Sums] = {}
            sketches: Dict[Tuple[Any, ...], Dict[int, int]] = {}
            for part in plan.rollups:
                for key, sums in part.aggregate().items():
                    rolled[key] = Sums.combine([rolled[key], sums]) if key in rolled else sums
            # A UTC month's hours that are another month in the zone are
            # taken from one and added to the other: drop what nets to none.
            rolled = {key: sums for key, sums in rolled.items() if sums.executions}
            if rolled:
                for part in plan.rollups:
                    if table is not None:
                        for key, more in part.cost_parts().items():
                            parts.setdefault(key, []).extend(more)
                    if p95:
                        for key, counts in part.bucket_counts().items():
                            if key in sketches:
                                _add(sketches[key], counts)
                            else:  # a part's sketches are its own: no copy
                                sketches[key] = counts
                # A group the rollups stand for, wholly or in part: its p95
                # from one sketch of the rollups' durations and the rows'.
                every: Dict[int, int] = {}
                for counts in sketches.values():
                    _add(every, counts)
                for key, counts in (query.bucket_counts() if p95 else {}).items():
                    _add(every, counts)
                    if key in sketches:
                        _add(sketches[key], counts)
                for key, counts in sketches.items():
                    total = sum(counts.values())
                    value = estimate(counts, nearest_rank(total)) if total > 0 else None
                    if value is not None:
                        percentiles[key] = value
                # The rows' own percentile only for groups the rollups do
                # not stand for.
                if p95 and query.key_names and any(key not in sketches for key in groups):
                    percentiles = {**query.group_percentiles(), **percentiles}
                for key, sums in rolled.items():
                    groups[key] = Sums.combine([groups[key], sums]) if key in groups else sums
                total_p95 = estimate(every, nearest_rank(sum(every.values())))
            elif p95:
                percentiles = query.group_percentiles() if query.key_names else {}
                total_p95 = query.total_percentile(sum(g.executions for g in groups.values()))
            else:
                total_p95 = None
    except peewee.DatabaseError as exc:
        raise DatabaseError(f"{database_name(source)}: {exc}") from exc
    rows = [
        ReportRow(dict(zip(query.key_names, key, strict=True)), _metrics(g, percentiles.get(key)))
        for key, g in groups.items()
    ]
    totals = _metrics(Sums.combine(groups.values()), total_p95)
    unpriced: Dict[str, int] = {}
    if table is not None:
        costs = {key: _priced(group, table, cost) for key, group in parts.items()}
        rows = [dataclasses.replace(row, metrics=dataclasses.replace(
            row.metrics, cost_usd=costs[key][0])) if key in costs else row
            for row, key in zip(rows, groups, strict=True)]
        for _, left in costs.values():
            for name, n in left.items():
                unpriced[name] = unpriced.get(name, 0) + n
        priced = [c for c, _ in costs.values() if c is not None]
        totals = dataclasses.replace(
            totals, cost_usd=round(math.fsum(priced), 6)
            if priced or not totals.executions else None)
    return Report(
        generated_at=generated_at,
        filters=filters,
        group_by=keys,
        key_names=query.key_names,
        rows=tuple(_ordered(rows, keys)) if query.key_names else (),
        totals=totals,
        cost=cost,
        unpriced=dict(sorted(unpriced.items(), key=lambda item: (-item[1], item[0]))),
        from_rollups=bool(rolled),
        incomplete_before=plan.incomplete_before,
        whole_hours_before=plan.whole_hours_before,
    )


def _add(into: Dict[int, int], counts: Mapping[int, int]) -> None:
    for k, n in counts.items():
        into[k] = into.get(k, 0) + n


def _priced(parts: Sequence[CostPart], table: Any, mode: str
            ) -> Tuple[Optional[float], Dict[str, int]]:
    """One group's cost in ``mode`` (``None`` when no execution of it could
    be priced) and its unpriced executions by model.

    A model's parts (from rows and from rollups) are added up before they
    are priced and the terms summed exactly (``math.fsum``), so the figure
    does not depend on which parts the rollups stood for."""
    merged: Dict[Tuple[str, bool], CostPart] = {}
    for part in parts:
        same = merged.get((part.model, part.paid))
        merged[(part.model, part.paid)] = part if same is None else CostPart(
            part.model, part.paid, same.executions + part.executions,
            (same.tokens[0] + part.tokens[0], same.tokens[1] + part.tokens[1],
             same.tokens[2] + part.tokens[2], same.tokens[3] + part.tokens[3]),
            same.recorded + part.recorded)
    recorded, terms, counted = 0.0, [], False
    unpriced: Dict[str, int] = {}
    for part in merged.values():
        if not part.executions:  # taken from this group as much as added
            continue
        if mode == "auto" and part.paid:
            recorded, counted = recorded + part.recorded, True
            continue
        price = table.find(part.model)
        if price is None:
            unpriced[part.model] = unpriced.get(part.model, 0) + part.executions
            continue
        terms.append(price.cost(*part.tokens))
        counted = True
    total = math.fsum([recorded / COST_UNITS_PER_USD, *terms])
    return (round(total, 6) if counted else None), unpriced


#: One group's cost in a mode, and its unpriced executions (for budgets).
priced = _priced


def _in_zone(value: Any, zone: Any) -> Any:
    """A naive datetime as the wall time it is in ``zone``; anything else
    as it is (checked by :func:`_filters`)."""
    if isinstance(value, _dt.datetime) and value.tzinfo is None and zone != zones.UTC:
        return zones.wall_to_utc(value, zone)
    return value


def _check_group_by(group_by: Any) -> Tuple[str, ...]:
    keys = (group_by,) if isinstance(group_by, str) else group_by
    if not isinstance(keys, Iterable):
        raise TelemetryValidationError(
            "group_by", f"must be a key or a sequence of keys, got {type(group_by).__name__}"
        )
    result: List[str] = []
    for key in keys:
        if key not in GROUP_KEYS and (not isinstance(key, str) or label_name(key) is None):
            raise TelemetryValidationError(
                "group_by", f"unknown key {key!r}; expected some of {', '.join(GROUP_KEYS)} "
                "or label:NAME"
            )
        if key not in result:
            result.append(key)
    return tuple(result)


def _metrics(sums: Sums, p95: Optional[int]) -> Metrics:
    n = sums.executions
    return Metrics(
        executions=n,
        input_tokens=sums.input_tokens,
        output_tokens=sums.output_tokens,
        cache_read_tokens=sums.cache_read_tokens,
        cache_creation_tokens=sums.cache_creation_tokens,
        total_tokens=sums.input_tokens + sums.output_tokens
        + sums.cache_read_tokens + sums.cache_creation_tokens,
        cost_usd=usd(sums.cost_units),
        avg_duration_ms=round(sums.duration_ms / n, 1) if n else None,
        p95_duration_ms=int(p95) if p95 is not None and n else None,
        failed=sums.failed,
    )


def _ordered(rows: List[ReportRow], group_by: Sequence[str]) -> List[ReportRow]:
    times = [k for k in group_by if k in TIME_KEYS]
    others = [k for k in (rows[0].keys if rows else ()) if k not in TIME_KEYS]

    def order(row: ReportRow) -> Tuple[Any, ...]:
        # Time ascending, then the most expensive first (unpriced last); the
        # remaining keys (None last) only make ties deterministic. Another
        # program's row whose wall time in the zone passes year 9999 has no
        # time label on SQLite and a five-digit year on PostgreSQL: last.
        cost = row.metrics.cost_usd
        return (
            tuple((row.keys[k] is None, len(row.keys[k] or ""), row.keys[k] or "")
                  for k in times),
            cost is None,
            -(cost or 0.0),
            tuple((row.keys[k] is None, row.keys[k]) for k in others),
        )

    return sorted(rows, key=order)
