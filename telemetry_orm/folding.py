"""The fold planner: which rows each step of a rollup, a purge or a replace
folds into the rollups, and the state after it.

The store runs it; the tables and their fold and unfold statements are in
:mod:`telemetry_orm.rollups`. It lives apart from them because it works
through an engine's backend (its transactions and clock), while the
backends name the rollup tables: one module for both would be a circle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import time
from typing import (
    Any,
    Callable,
    ContextManager,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from peewee import SQL, fn

from . import label_rollups, zone_days, zones
from .backends.base import Backend
from .rollups import (
    LEGACY_TABLES,
    STATE_TABLE,
    State,
    build_tiers,
    ceil_hour,
    counted,
    floor_hour,
    fold,
    read_state,
    read_tiers,
    uncounted,
    unfold,
    write_state,
    write_tiers,
)
from .schema import LABELS_TABLE, format_timestamp, parse_timestamp
from .sql import Statement, quote, render
from .tables import Tables

#: Rows a step of a rollup folds in, about (some 20 ms of SQLite's write
#: lock: folding costs about 8 µs a row).
FOLD_ROWS = 2_500

#: Hour sketch rows a step that builds the tiers reads, about (each is
#: read by seven grouped upserts: some 15 ms of SQLite's write lock).
TIER_ROWS = 2_000


def naive_utc(value: Any) -> _dt.datetime:
    """A database time (UTC text as stored, or a datetime) as a naive UTC datetime."""
    if isinstance(value, str):
        value = parse_timestamp(value)
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc)
    return value.replace(tzinfo=None)  # type: ignore[no-any-return]


class Pacing(NamedTuple):
    """How a long fold lets writers in between its steps, as a purge does:
    ``after(conn, held)``, right after a step that held the write lock
    ``held`` seconds, gives the pause before the next (the engine's purge
    pacer); ``gap(pause)`` takes it (the store's upkeep); ``rows(most,
    rows, held)`` sizes the next step (the pacer's ``step_rows``)."""

    after: Callable[[Any, float], float]
    gap: Callable[[float], None]
    rows: Callable[[int, Optional[int], float], int]


class _Size:
    """The rows of the next step of one kind, at most ``most``: as
    ``pacing`` says after each step (see :class:`Pacing`)."""

    def __init__(self, pacing: Optional[Pacing], most: int) -> None:
        self._pacing = pacing
        self._most = most
        self.rows = most if pacing is None else pacing.rows(most, None, 0.0)

    def held(self, seconds: float) -> None:
        if self._pacing is not None:
            self.rows = self._pacing.rows(self._most, self.rows, seconds)


@contextlib.contextmanager
def _step(backend: Backend, connection: Callable[[], ContextManager[Any]],
          pacing: Optional[Pacing], size: Optional[_Size] = None) -> Iterator[Any]:
    """One step of a long fold: a fold transaction on a ``connection()`` of
    its own, then the pause ``pacing`` gives, outside the store's lock;
    ``size`` learns how long the step held the lock."""
    pause = 0.0
    with connection() as conn:
        began = time.monotonic()
        with backend.fold_transaction(conn):
            yield conn
        if pacing is not None:
            held = time.monotonic() - began
            pause = pacing.after(conn, held)
            if size is not None:
                size.held(held)
    if pacing is not None:
        pacing.gap(pause)


def fold_rows(conn: Any, tables: Tables, where: Any, *, take_out: bool = False) -> int:
    """Fold the rows matching ``where`` in (``take_out``: take them out),
    inside the caller's transaction on ``conn``; return how many. They go
    to their hours, and to the day and month tiers as well where those are
    built (see :mod:`telemetry_orm.rollups`)."""
    m, database = tables.executions, tables.database

    def count(rows: Any) -> int:
        return int(conn.execute(*render(database, m.select(fn.COUNT(SQL("*"))).where(rows))
                                ).fetchone()[0])

    n = count(where)
    if n:
        tables.dialect.prepare(database)
        models = tables.rollups
        built = read_tiers(conn, models)
        tiers = None
        if built is not None:
            below = m.created_at < format_timestamp(built)
            tiers = below if count(where & below) else None
        build = unfold if take_out else fold
        for statement in build(models, m, tables.dialect, where, tiers=tiers):
            conn.execute(*statement)
        if tables.engine.has_table(conn, LABELS_TABLE):
            for query in label_rollups.fold(models, m, tables.labels, tables.dialect, where,
                                            -1 if take_out else 1):
                conn.execute(*render(database, query))
        _rebuild_days(conn, tables, where)
    return n


def _rebuild_days(conn: Any, tables: Tables, where: Any) -> None:
    """After a fold of the rows matching ``where`` changed their hours:
    the built days of the kept zones holding those hours, built again."""
    models, m, dialect = tables.rollups, tables.executions, tables.dialect
    kept = [k for k in zone_days.read_kept(conn, models) if k.built_before is not None]
    if not kept:
        return
    last = max(ceil_hour(k.built_before) for k in kept if k.built_before is not None)
    rows = m.select(dialect.as_text(dialect.hour(m.created_at))).where(
        where & (m.created_at < format_timestamp(last))).distinct()
    hours = [naive_utc(row[0]) for row in conn.execute(*render(tables.database, rows))]
    for statement in zone_days.rebuild(models, dialect, kept, hours):
        conn.execute(*statement)


def next_fold(conn: Any, tables: Tables, state: State, target: int, until: _dt.datetime,
              rows: int = FOLD_ROWS, hour_rows: Optional[int] = None
              ) -> Optional[Tuple[Any, State]]:
    """The rows of the next step of a rollup up to ``until`` and id
    ``target`` (``None``: only the state moves) and the state after it;
    ``None`` when all is counted. Rows that came after the last fold for
    hours already counted go first, ``rows`` at a time; then the next
    hours, up to about ``rows`` rows (an hour at least). ``hour_rows``:
    ``None`` too, instead of the next hour, when that hour alone holds more
    rows than this (a step of it would hold the write lock too long)."""
    m, database, as_text = tables.executions, tables.database, tables.dialect.as_text
    counted_ids, before = state.counted_ids, state.counted_before
    if counted_ids < target:
        if before is None:  # nothing is counted by time yet
            return None, dataclasses.replace(state, counted_ids=target)
        upto = min(counted_ids + rows, target)
        where = ((m.id > counted_ids) & (m.id <= upto)
                 & (m.created_at < format_timestamp(before)))
        return where, dataclasses.replace(state, counted_ids=upto)
    if before is None:
        first = conn.execute(*render(database, m.select(as_text(fn.MIN(m.created_at))))
                             ).fetchone()[0]
        start = until if first is None else min(until, floor_hour(naive_utc(first)))
        return None, dataclasses.replace(state, counted_before=start)
    if before >= until:
        return None
    row = conn.execute(*render(database, m.select(as_text(m.created_at)).where(
        m.created_at >= format_timestamp(before)).order_by(m.created_at)
        .limit(1).offset(rows))).fetchone()
    hour = before + _dt.timedelta(hours=1)
    if row is not None and hour_rows is not None and naive_utc(row[0]) < hour and \
            conn.execute(*render(database, m.select(m.id).where(
                (m.created_at >= format_timestamp(before))
                & (m.created_at < format_timestamp(hour))).limit(1).offset(hour_rows))
            ).fetchone() is not None:
        return None
    step_end = until if row is None else min(until, max(floor_hour(naive_utc(row[0])), hour))
    where = ((m.id <= counted_ids) & (m.created_at >= format_timestamp(before))
             & (m.created_at < format_timestamp(step_end)))
    return where, dataclasses.replace(state, counted_before=step_end)


def roll_up(backend: Backend, tables: Tables, connection: Callable[[], ContextManager[Any]],
            pacing: Optional[Pacing] = None) -> Tuple[int, int, State]:
    """Fold every complete hour (by the database clock) and the rows that
    arrived since for hours folded before (:func:`fold_up`), then build the
    day and month tiers up to there (:func:`build_up`); return (rows,
    steps, the state after). ``pacing``: the pauses between steps that let
    other writers in."""
    rows, steps, state = fold_up(backend, tables, connection, pacing)
    return rows, steps + build_up(backend, tables, connection, pacing), state


def fold_up(backend: Backend, tables: Tables, connection: Callable[[], ContextManager[Any]],
            pacing: Optional[Pacing] = None, until: Optional[_dt.datetime] = None,
            hour_rows: Optional[int] = None) -> Tuple[int, int, State]:
    """Fold every complete hour before ``until`` (by default the current
    hour, by the database clock; never later) and the rows that arrived
    since for hours folded before, a step per transaction on a
    ``connection()`` of its own (the caller's lock let go between them);
    return (rows, steps, the state after). ``hour_rows``: stop before an
    hour of more rows than this (see :func:`next_fold`)."""
    m = tables.executions
    with connection() as conn:
        # None: no id can be vouched for now; hours still fold in, for the
        # ids counted so far.
        target = backend.newest_id(conn, m) or 0
        now = floor_hour(naive_utc(backend.cutoff(conn, 0.0)))
        # Labelled rows cost more to fold: steps of fewer of them.
        weight = label_rollups.weight(conn, backend, tables.labels, target)
    until = now if until is None else min(until, now)
    rows = steps = 0
    state = State()
    size = _Size(pacing, max(1, int(FOLD_ROWS * backend.fold_scale / weight)))
    if hour_rows is not None:
        hour_rows = max(1, int(hour_rows / weight))
    while True:
        with _step(backend, connection, pacing, size) as conn:
            state = read_state(conn, tables.rollups)
            step = next_fold(conn, tables, state, max(target, state.counted_ids), until,
                             size.rows, hour_rows)
            if step is None:
                break
            where, state = step
            if where is not None:
                rows += fold_rows(conn, tables, where)
            write_state(conn, tables.rollups, state, upsert=tables.dialect.upsert)
        steps += 1
    return rows, steps, state


#: The most rows of one hour a purge folds in ahead of its chunks (see
#: :func:`fold_up`): a step holds an hour at least, and steps of one hour
#: of 3,600 rows held SQLite's write lock 25 ms at the median, 31 ms at
#: most in one purge of 500,000 of 1,000,000 rows (a round of another run
#: held 36 ms). The chunks fold the rows of
#: a denser hour, and of every hour after it, as they delete them, a chunk
#: of ids at a time.
AHEAD_HOUR_ROWS = 4_000


def held_hours(state: State) -> Optional[_dt.datetime]:
    """The end of the hours the hour tier can hold rows of (``None``:
    none): the counted ones, and those a purge folded."""
    ends = [t for t in (state.counted_before,
                        state.purged_before and ceil_hour(state.purged_before)) if t]
    return max(ends) if ends else None


def next_build(conn: Any, tables: Tables, built: Optional[_dt.datetime], end: _dt.datetime,
               rows: int = TIER_ROWS) -> Optional[Tuple[_dt.datetime, _dt.datetime]]:
    """The hours ``[start, stop)`` the next step of :func:`build_up` adds to
    the tiers, about ``rows`` hour sketch rows (an hour at least); ``None``
    when the tiers are built up to ``end``."""
    d, database = tables.rollups.hour_durations, tables.database
    as_text = tables.dialect.as_text
    if built is None:
        first = conn.execute(*render(database, d.select(as_text(fn.MIN(d.hour))))).fetchone()[0]
        built = end if first is None else min(end, naive_utc(first))
    if built >= end:
        return (built, built) if built == end else None
    row = conn.execute(*render(database, d.select(as_text(d.hour)).where(
        d.hour >= format_timestamp(built)).order_by(d.hour).limit(1).offset(rows))
    ).fetchone()
    stop = end if row is None else min(end, max(naive_utc(row[0]),
                                                 built + _dt.timedelta(hours=1)))
    return built, stop


#: Stand-ins for a tier step's hours while its statements are rendered once
#: (see :class:`_TierStatements`): times no stored hour can be.
_START, _STOP = _dt.datetime(1, 1, 1, 1), _dt.datetime(1, 1, 1, 2)


class _TierStatements:
    """:func:`~telemetry_orm.rollups.build_tiers` for one ``build_up``,
    rendered once: each step's hours are filled into the parameters where
    the stand-ins were. Peewee built the eight statements in about 3 ms of
    Python per step, inside the write lock. Filling is trusted once it gave
    the very statements built whole for a step; until then (or if it never
    does) each step builds them whole."""

    def __init__(self, models: Any, dialect: Any) -> None:
        self._models, self._dialect = models, dialect
        self._template: Optional[List[Statement]] = None
        self._trusted = False

    def __call__(self, start: _dt.datetime, stop: _dt.datetime) -> List[Statement]:
        if self._template is None:
            self._template = build_tiers(self._models, self._dialect, _START, _STOP)
        values = {format_timestamp(_START): format_timestamp(start),
                  format_timestamp(_STOP): format_timestamp(stop)}
        filled = [(sql, [values.get(p, p) if isinstance(p, str) else p for p in params])
                  for sql, params in self._template]
        if self._trusted:
            return filled
        direct = build_tiers(self._models, self._dialect, start, stop)
        self._trusted = filled == direct
        return direct


def build_up(backend: Backend, tables: Tables, connection: Callable[[], ContextManager[Any]],
             pacing: Optional[Pacing] = None) -> int:
    """Build the day and month tiers from the hours up to the end of those
    the hour tier holds, a stretch of hours per transaction; then drop the
    tiers of earlier versions. Return the transactions it took."""
    steps = 0
    models = tables.rollups
    size = _Size(pacing, TIER_ROWS * backend.fold_scale)
    statements = _TierStatements(models, tables.dialect)
    while True:
        with _step(backend, connection, pacing, size) as conn:
            end = held_hours(read_state(conn, models))
            if end is None:
                break
            built = read_tiers(conn, models)
            step = next_build(conn, tables, built, end, size.rows)
            if step is None:
                break
            start, stop = step
            if start < stop:
                for statement in statements(start, stop):
                    conn.execute(*statement)
            write_tiers(conn, models, stop, upsert=tables.dialect.upsert)
            if built == stop:
                break
        steps += 1
    steps += build_zones(backend, tables, connection, pacing)
    with connection() as conn:
        legacy = [name for name in LEGACY_TABLES if backend.has_table(conn, name)]
    if legacy:
        with connection() as conn, backend.fold_transaction(conn):
            for name in legacy:
                conn.execute(f"DROP TABLE IF EXISTS {quote(tables.database, name)}")
        steps += 1
    return steps


def next_days(conn: Any, tables: Tables, zone: Any, kept: zone_days.Kept, end: _dt.datetime,
              rows: int = TIER_ROWS
              ) -> Optional[Tuple[_dt.datetime, _dt.datetime, _dt.datetime, bool]]:
    """The next whole days of ``zone`` :func:`build_zones` adds, about
    ``rows`` hour sketch rows of them and at most
    :data:`ZONE_STEP_DAYS` days, as the instants ``(start, stop)`` they
    begin and end, with the instant its built days begin (the day of the
    first hour, when none are built) and whether the hour tier holds no
    hour in them (a gap, crossed in one step); ``None`` when every day
    whose hours the hour tier holds, up to ``end``, is built. Hours more
    than :data:`ZONE_YEARS` years before ``end`` (another program's rows
    of year 1200) are left to the hour tier."""
    d, database = tables.rollups.hour_durations, tables.database
    as_text = tables.dialect.as_text
    start, first = kept.built_before, kept.built_from

    def next_hour(after: _dt.datetime, skip: int = 0) -> Optional[_dt.datetime]:
        row = conn.execute(*render(database, d.select(as_text(d.hour)).where(
            d.hour >= format_timestamp(after)).order_by(d.hour).limit(1).offset(skip))
        ).fetchone()
        return None if row is None else naive_utc(row[0])

    if start is None:
        hour = next_hour(max(end - _dt.timedelta(days=ZONE_YEARS * 366),
                             _dt.datetime(2, 1, 3)))
        day = None if hour is None else zone_days.day_around(zone, hour)
        if day is None:
            return None
        start = first = day[0]
    if first is None or start >= end:
        return None
    hour = next_hour(ceil_hour(start))
    if hour is None or hour >= end:
        return None
    week = _dt.timedelta(days=7)
    if hour - start > week:  # no hour in the days up to the one before `hour`
        gap = zone_days.day_edges(zone, hour - week, hour)
        return (start, gap[-1], first, True) if gap and gap[-1] > start else None
    ahead = next_hour(ceil_hour(start), rows)
    limit = min(end, start + _dt.timedelta(days=ZONE_STEP_DAYS),
                ahead if ahead is not None else end)
    edges = zone_days.day_edges(zone, start + _dt.timedelta(seconds=1), min(end, limit + week))
    if not edges:
        return None
    within = [e for e in edges if e <= limit]
    # A day of more than `rows` sketch rows is still built whole.
    return start, within[-1] if within else edges[0], first, False


#: Days a step of :func:`build_zones` adds at most, and how far back from
#: the hours it builds days (see :func:`next_days`).
ZONE_STEP_DAYS = 60
ZONE_YEARS = 100


def build_zones(backend: Backend, tables: Tables, connection: Callable[[], ContextManager[Any]],
                pacing: Optional[Pacing] = None) -> int:
    """Build the days of the kept zones from the hours, up to the last of
    their days whose hours the hour tier holds, some days per transaction
    (see :mod:`telemetry_orm.zone_days`). Return the transactions it took."""
    models, steps = tables.rollups, 0
    with connection() as conn:
        names = [k.zone for k in zone_days.read_kept(conn, models)]
    for name in names:
        zone = zones.check_zone("zone", name)
        size = _Size(pacing, TIER_ROWS * backend.fold_scale)
        while True:
            with _step(backend, connection, pacing, size) as conn:
                end = held_hours(read_state(conn, models))
                kept = _kept(conn, models, name)
                step = None if end is None or kept is None else next_days(
                    conn, tables, zone, kept, end, size.rows)
                if step is None:
                    break
                start, stop, first, empty = step
                if not empty:
                    for statement in zone_days.build(models, tables.dialect, zone, start,
                                                     stop):
                        conn.execute(*statement)
                zone_days.write_kept(conn, models, zone_days.Kept(name, first, stop),
                                     upsert=tables.dialect.upsert)
            steps += 1
        # The hours the days' edges cut, split between their two days, in
        # batches: those of the days just built, and those a fold changed.
        seen: Any = None
        size = _Size(pacing, SPLITS)
        while True:
            with _step(backend, connection, pacing, size) as conn:
                kept = _kept(conn, models, name)
                stale = [] if kept is None else zone_days.stale_cuts(conn, models, zone, kept)
                if not stale or stale[0] == seen:  # nothing to split it from: leave it
                    break
                seen = stale[0]
                _split(conn, tables, zone, stale[:size.rows])
            steps += 1
    return steps


#: Cut hours a step of :func:`build_zones` splits, at most: each reads its
#: hour's rows and rollups (about 1 ms at 60 executions an hour), and the
#: statements are made inside the step (7 ms for ten): some 30 ms of lock.
SPLITS = 20


def _kept(conn: Any, models: Any, name: str) -> Optional[zone_days.Kept]:
    return next((k for k in zone_days.read_kept(conn, models) if k.zone == name), None)


def _split(conn: Any, tables: Tables, zone: Any,
           cuts: Sequence[Tuple[_dt.datetime, _dt.datetime]]) -> None:
    """Split the cut hours ``cuts`` (with their edges) between their two days."""
    if not cuts:
        return
    m = tables.executions
    rows = counted(m, read_state(conn, tables.rollups))
    for statement in zone_days.split(tables.rollups, m, tables.dialect, zone, cuts,
                                     rows if rows is not None else m.id < 0):
        conn.execute(*statement)


def keep_zones(backend: Backend, tables: Tables, connection: Callable[[], ContextManager[Any]],
               keep: Sequence[str], drop: Sequence[str]) -> Tuple[str, ...]:
    """Start keeping the days of the zones ``keep`` (the next
    :func:`build_zones` builds them) and stop keeping ``drop``, at once;
    return the zones kept then."""
    models = tables.rollups
    if keep or drop:
        with connection() as conn, backend.fold_transaction(conn):
            known = {k.zone for k in zone_days.read_kept(conn, models)}
            for name in drop:
                for statement in zone_days.forget(models, name):
                    conn.execute(*statement)
            for name in keep:
                if name not in known and name not in drop:
                    zone_days.write_kept(conn, models, zone_days.Kept(name, None, None),
                                         upsert=tables.dialect.upsert)
    with connection() as conn:
        return tuple(k.zone for k in zone_days.read_kept(conn, models))


def purge_fold(tables: Tables, when: Any) -> Callable[[Any, Any, Optional[State]], None]:
    """What a purge chunk runs before it deletes the rows ``rows`` (a
    condition) on ``conn``: fold in those not counted yet, and remember the
    purge's cutoff ``when``. ``state``: the rollups' state, if the chunk
    has read it in its transaction already."""
    cutoff = naive_utc(when)

    def run(conn: Any, rows: Any, state: Optional[State] = None) -> None:
        models = tables.rollups
        if state is None:
            state = read_state(conn, models)
        fold_rows(conn, tables, rows & uncounted(tables.executions, state))
        if state.purged_before is None or state.purged_before < cutoff:
            write_state(conn, models, dataclasses.replace(state, purged_before=cutoff),
                        upsert=tables.dialect.upsert)

    return run


@contextlib.contextmanager
def refolding(backend: Backend, tables: Tables, rolled_up: bool, conn: Any, row_id: int
              ) -> Iterator[None]:
    """Around the UPDATE that replaces the values of row ``row_id`` on
    ``conn``, inside its transaction: if the rollups count the row, its old
    values go out of them before, and after it the new ones go in if the
    row, maybe at another ``created_at``, counts then; no other connection
    folds meanwhile. ``rolled_up``: the rollup tables are known to exist
    (else they are looked for on ``conn``)."""
    with backend.fold_transaction(conn):
        where = None
        if rolled_up or backend.has_table(conn, STATE_TABLE):
            models = tables.rollups
            is_counted = counted(tables.executions, read_state(conn, models))
            if is_counted is not None:
                where = (tables.executions.id == row_id) & is_counted
        if where is not None:
            fold_rows(conn, tables, where, take_out=True)
        yield
        if where is not None:
            fold_rows(conn, tables, where)
