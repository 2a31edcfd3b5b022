"""Reservations: hold an estimate against a budget before spending it, and
turn the hold into the real cost when the execution is recorded.

``store.reserve(name, usd=estimate)`` checks, in one transaction, that for
the budget ``name`` and every other budget whose scope contains its scope
(its ``repo`` and ``model`` ``None`` or equal, its labels a subset), what
was spent in the period plus what live holds keep plus ``estimate`` stays
within the limit; then it writes a hold row per budget. The check and the
hold are atomic across threads and processes: on SQLite the transaction
takes the file's write lock first (``BEGIN IMMEDIATE``); on PostgreSQL and
MySQL/MariaDB it locks the budgets' rows (``SELECT … FOR UPDATE``, in name
order, so overlapping reservations never deadlock) and reads, at ``READ
COMMITTED``, what the previous holder of the lock committed. The live holds
are read before the executions: a hold turning into its row between the two
reads is then counted twice, never missed.

:meth:`Hold.record` writes the execution and deletes the hold in one
transaction; leaving the block without it (or with an exception) deletes
the hold. A hold whose process died stops counting at its ``expires_at``
(the database clock at the reservation plus ``ttl``).

So N processes racing for one budget pass its limit together by at most
what the last successful holds' real costs exceed their estimates.
Executions recorded without a hold (plain ``record()``) are counted, never
refused.

Spent is the ``auto`` cost (as a budget's status counts it) of the
period's rows, kept per budget as a watermark plus the rows past it: see
:class:`Reserver`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import socket
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from peewee import SQL, fn

from . import budgets, clock, prices
from . import sql as _sql
from .budgets import Budget, database_now, period_bounds
from .checks import check_number, is_amount
from .errors import (
    BudgetExceededError,
    StoreBusyError,
    TelemetryValidationError,
    UnknownBudgetError,
)
from .record import coerce_record
from .report_query import Query, checked_filters, cost_part_rows
from .reports import priced
from .schema import format_timestamp
from .sql import COST_UNITS_PER_USD
from .tables import tables_of

#: A hold's lifetime by default (seconds): longer than an agent's run.
TTL = 3600.0

_INF = float("inf")

#: Float sums of many costs differ from the exact sum by far less than this.
SLACK = 1e-9

LOGGER = logging.getLogger("telemetry_orm")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which budgets a reservation of one run checks, worked out from the
    budgets as read (see :meth:`Reserver.plan`)."""

    #: The budget named.
    named: Budget
    #: The run's scope: ``named``'s, narrowed by the run's repo, model and labels.
    scope: Budget
    #: Every budget whose scope contains the run's, by name.
    checked: Tuple[Budget, ...]
    #: Every other budget (an entry recorded in the hold must fall in none).
    others: Tuple[Budget, ...]
    #: The names of ``checked``.
    names: Tuple[str, ...]


class Hold:
    """A live reservation against a budget (made by ``store.reserve``): a
    context manager; :meth:`record` records the execution it was for."""

    def __init__(self, store: Any, reserving: Reserver, plan: Plan, hold: str,
                 usd: float) -> None:
        self._store = store
        self._reserver = reserving
        self._plan = plan
        #: The budget named at the reservation.
        self.budget = plan.named
        #: The run's scope: the named budget's, narrowed by the repo, model
        #: and labels given to ``reserve`` (its ``name`` is the named budget's).
        self.scope = plan.scope
        #: The hold's id (its rows' ``hold`` column).
        self.id = hold
        #: The estimate held.
        self.usd = usd
        #: Every budget the reservation checked and holds against, by name.
        self.budgets = plan.names
        #: The id of the execution recorded, once :meth:`record` has run.
        self.recorded: Optional[int] = None
        self._open = True
        #: What the reservation left for :meth:`Reserver.follow`.
        self.moves: Any = None

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()

    def record(self, entry: Any, *, key: Optional[str] = None, replace: bool = False) -> int:
        """Record ``entry`` (as ``store.record`` does, ``key`` and ``replace``
        included) and delete this hold in the same transaction; return the
        row id. An entry outside the reservation's scope (another repo, model
        or labels), or inside a budget the reservation did not check (its
        labels were not given to ``reserve``), is refused, nothing written:
        its cost would escape that budget. Inside a transaction of the
        application's, both go with it: if it rolls back, the row is gone
        and the hold's rows are back, counting until its ``ttl``."""
        if not self._open:
            raise TelemetryValidationError(
                "hold", "this hold has ended (recorded, released or left)")
        record = coerce_record(entry)
        scope = self.scope
        if not scope.covers(record.repo, record.model, record.labels):
            raise TelemetryValidationError(
                "entry", f"outside the reservation's scope (budget {scope.name!r}: repo "
                         f"{scope.repo!r}, model {scope.model!r}, labels "
                         f"{dict(scope.labels)!r}): its cost would escape the budget; "
                         "nothing was recorded")
        plan = self._plan
        unchecked = [b.name for b in plan.others
                     if b.covers(record.repo, record.model, record.labels)]
        if unchecked:
            raise TelemetryValidationError(
                "entry", f"falls in budget {unchecked[0]!r}, which the reservation did not "
                         "check: pass the run's repo, model and labels to reserve() so that "
                         "every budget it falls in allows it; nothing was recorded")
        if key is not None:
            # Its tables made now: DDL inside the transaction would end it on MySQL.
            self._store.keyed_sql()
        row_id = self._reserver.write(self, record, key, replace)
        self.recorded = row_id
        self._open = False
        return row_id

    def release(self) -> None:
        """Delete the hold (nothing recorded); harmless once ended. A hold
        that cannot be deleted now stops counting at its ``expires_at``."""
        if not self._open:
            return
        self._open = False
        store = self._store
        opened = store.opened
        try:
            with store.connection() as conn, opened.backend.locking_transaction(opened.database):
                self._reserver.run(conn, self._reserver.delete_hold, self.id)
        except Exception as exc:  # noqa: BLE001 - it expires anyway
            LOGGER.warning("could not release hold %s of budget %r (it expires at its ttl): %s",
                           self.id, self.budget.name, exc)


def check_estimate(usd: Any, ttl: Any) -> float:
    """The estimate, checked with the ``ttl``."""
    if type(usd) is float and type(ttl) is float and 0.0 <= usd < _INF and 0.0 < ttl < _INF:
        return usd  # the usual case, at once (NaN fails every comparison)
    if not is_amount(usd):
        raise TelemetryValidationError("usd", f"must be a finite number >= 0, got {usd!r}")
    if check_number("ttl", ttl, "seconds") <= 0:
        raise TelemetryValidationError("ttl", f"must be a number of seconds above 0, got {ttl!r}")
    return float(usd)


#: Stand-ins for the ids a tail statement is rendered with, replaced at each run.
_AFTER, _UPTO = -7_000_000_001, -7_000_000_002

#: On a server the watermarks move once this many rows of a budget's period
#: lie past them (reading that many by id costs less than moving them each
#: time: moving asks ``newest_id``, which makes writers wait a moment). On
#: SQLite they move over every row a reservation reads.
ADVANCE_ROWS = 100
#: The ``pid`` of a hold kept to its period's end (an unpriced run's).
KEPT = -1
#: Sums a reservation makes while replaces or purges keep committing.
SUMS = 5

Statement = Tuple[str, List[Any]]
#: A run's repo, model and labels, as given to ``reserve`` (``None``: not given).
Run = Tuple[Optional[str], Optional[str], Mapping[str, str]]
#: A run of which nothing is known beforehand.
NO_RUN: Run = (None, None, {})
#: A period's start, end and stamp, then its start and end as ``created_at`` text.
Bounds = Tuple[Any, Any, str, str, str]
#: A cost, its unpriced executions by model, and its rows.
_Part = Tuple[float, Dict[str, int], int]


class Reserver:
    """The statements of one store's reservations, rendered once.

    Spent, under the lock, is the budget's watermark (``telemetry_orm_budget_spend``:
    what the rows with ids up to ``through_id`` spent in the period) plus
    the rows past it, read by primary-key range: a reservation never sums
    the whole period again.

    The watermark only moves over ids that can no longer appear: on
    PostgreSQL and MySQL an id is given out at insert, before commit, so a
    row with a smaller id can commit after a larger one was read, and a
    naive ``id > through_id`` would miss it for ever. So on a server it
    moves to ``Backend.newest_id`` (the largest id below which every
    transaction has ended), asked before the lock, once the rows past it are
    many (:data:`ADVANCE_ROWS`); the rows past that id are read at every
    reservation. On SQLite the reservation holds the file's write lock, so
    every id given out is committed: no read when no row lies past the
    watermark, else the watermark moves to the largest id. ``Hold.record``
    then moves it over its own row, in the row's transaction, when it stood
    just below it (:meth:`follow`): a reservation after a recorded one reads
    no row.

    A replaced row (``record(key=…, replace=True)``) changes a cost below
    the watermark: the replace counts itself in ``telemetry_orm_budget_state``,
    read before the rows, and a watermark summed under another count is
    summed again (a replace committed while a reservation sums is then
    caught by the next one, without any lock between them).
    ``set_budget`` and ``delete_budget`` delete the budget's watermark and
    count in the replace count (every watermark is summed again once). A
    purge does not touch them: purged spend still counts while they stand,
    and a watermark summed again (after a replace, in a new period) starts
    from what the period's purged rows spent, read from the rollups as the
    budget's status reads it (its spent less the rows still there).
    """

    def __init__(self, store: Any, tables: Any) -> None:
        opened = store.opened
        self.store = store
        self.tables = tables
        self.backend = opened.backend
        self.database = database = opened.database
        rows, holds, _, spend, state = tables
        model = opened.model
        self.model = model
        self.prices = prices.default_prices()
        p, q, table = database.param, self.quoted, self.table_of
        self.read_budgets: Statement = (
            f"SELECT {q('budget')}, {q('usd')}, {q('period')}, {q('tz')}, {q('repo')}, "
            f"{q('model')}, {q('labels')}, {q('warn_at')} FROM {table(rows)}", [])
        self.lock: Statement = (
            f"SELECT {q('budget')}, {q('usd')}, {q('period')}, {q('tz')}, {q('repo')}, "
            f"{q('model')}, {q('labels')}, {q('warn_at')} FROM {table(rows)} "
            f"WHERE {q('budget')} = {p}{self.backend.dialect.row_lock}", [])
        self.read_holds: Statement = (
            f"SELECT {q('budget')}, SUM(CASE WHEN {q('expires_at')} > {p} THEN {q('usd')} "
            f"ELSE 0 END), SUM(CASE WHEN {q('expires_at')} <= {p} THEN 1 ELSE 0 END) "
            f"FROM {table(holds)} GROUP BY {q('budget')}", [])
        self.read_spend: Statement = (
            f"SELECT {q('budget')}, {q('period_start')}, {q('through_id')}, "
            f"{q('spent_usd')}, {q('unpriced')}, {q('replaced')} FROM {table(spend)}", [])
        self.read_state: Statement = (f"SELECT {q('replaced')} FROM {table(state)}", [])
        self.newest = _sql.render(database, model.select(fn.MAX(model.id)))
        self._insert_hold = (
            f"INSERT INTO {table(holds)} ({q('hold')}, {q('budget')}, {q('usd')}, "
            f"{q('expires_at')}, {q('pid')}, {q('host')}) VALUES ",
            f"({p}, {p}, {p}, {p}, {p}, {p})")
        #: The INSERT of a reservation's hold rows, by their number.
        self.insert_holds: Dict[int, str] = {}
        self.host = socket.gethostname()[:200]
        self.delete_hold: Statement = (
            f"DELETE FROM {table(holds)} WHERE {q('hold')} = {p}", [])
        self.keep_hold: Statement = (
            f"UPDATE {table(holds)} SET {q('expires_at')} = {p}, {q('pid')} = {KEPT} "
            f"WHERE {q('hold')} = {p} AND {q('budget')} = {p}", [])
        self.forget: Statement = (f"DELETE FROM {table(spend)} WHERE {q('budget')} = {p}", [])
        self.remember: Statement = (
            f"INSERT INTO {table(spend)} ({q('budget')}, {q('period_start')}, "
            f"{q('through_id')}, {q('spent_usd')}, {q('unpriced')}, {q('replaced')}) VALUES "
            f"({p}, {p}, {p}, {p}, {p}, {p})", [])
        self._tails: Dict[Tuple[Any, ...], Statement] = {}
        self.advance = ADVANCE_ROWS
        #: Rows past the watermarks at the last reservation, by budget named.
        self.past: Dict[str, int] = {}
        #: Reservations to make before asking ``newest_id`` again, by budget
        #: named, after it could not answer (a write in flight).
        self.wait: Dict[str, int] = {}
        self._bounds: Dict[Tuple[str, str], Bounds] = {}
        self._budgets: Dict[Tuple[Any, ...], Budget] = {}

    def quoted(self, name: str) -> str:
        """``name`` quoted for the store's engine."""
        return _sql.quote(self.database, name)

    def table_of(self, model: Any) -> str:
        """The quoted table name of ``model``."""
        return self.quoted(model._meta.table_name)

    def run(self, conn: Any, statement: Statement, *values: Any) -> Any:
        """Run a statement rendered here with ``values`` in place of its parameters."""
        return conn.execute(statement[0], list(values) if values else statement[1])

    def tail(self, budget: Budget, start: Any, end: Any, bounded: bool) -> Statement:
        """The cost parts of the rows of ``budget``'s scope in ``[start,
        end)`` with ids past ``_AFTER`` (and up to ``_UPTO`` when
        ``bounded``), read by id (every other column hidden from the indexes)."""
        key = (budget.name, budget.repo, budget.model, tuple(sorted(budget.labels.items())),
               start, end, bounded)
        found = self._tails.get(key)
        if found is None:
            m = self.model
            hide = self.backend.dialect.no_index
            extra = [m.id > _AFTER, hide(m.created_at) >= format_timestamp(start),
                     hide(m.created_at) < format_timestamp(end)]
            if bounded:
                extra.append(m.id <= _UPTO)
            if budget.repo is not None:
                extra.append(hide(m.repo) == budget.repo)
            if budget.model is not None:
                extra.append(hide(m.model) == budget.model)
            if budget.labels:
                labels: Any = tables_of(self.database).labels
                for name, value in sorted(budget.labels.items()):
                    extra.append(fn.EXISTS(labels.select(SQL("1")).where(
                        labels.execution_id == m.id, labels.name == name,
                        labels.value == value)))
            condition = extra[0]
            for part in extra[1:]:
                condition = condition & part
            query = Query(database=self.database, filters=checked_filters(), group_by=(),
                          extra=condition)
            found = _sql.render(self.database, query.cost_parts_query())
            self._tails[key] = found
        return found

    def spent(self, conn: Any, budget: Budget, start: Any, end: Any, after: int,
              upto: Optional[int]) -> Tuple[_Part, _Part]:
        """What the rows past ``after`` up to ``upto`` spent, and what those
        past ``upto`` spent (``upto`` ``None``: every row past ``after``, in
        the first)."""
        first = self._part(conn, budget, start, end, after, upto)
        if upto is None:
            return first, (0.0, {}, 0)
        return first, self._part(conn, budget, start, end, upto, None)

    def _part(self, conn: Any, budget: Budget, start: Any, end: Any, after: int,
              upto: Optional[int]) -> _Part:
        sql, params = self.tail(budget, start, end, upto is not None)
        values = [after if v == _AFTER else upto if v == _UPTO else v for v in params]
        parts = cost_part_rows(conn.execute(sql, values).fetchall(), 0).get((), [])
        cost, unpriced = priced(parts, self.prices, "auto")
        return cost or 0.0, unpriced, sum(p.executions for p in parts)

    def reserve(self, name: str, usd: float, ttl: float, run: Run = NO_RUN) -> Hold:
        """Hold ``usd`` against the budget ``name`` and every budget whose
        scope contains the run's (``name``'s, narrowed by ``run``: its repo,
        model and labels), or raise :class:`BudgetExceededError` naming the
        first (by name) that refuses."""
        store, backend, database = self.store, self.backend, self.database
        # Random like a uuid4, without its cost on every reservation.
        hold = os.urandom(16).hex()
        # Move the watermarks when many rows lie past them (or none is known).
        advance = self.past.get(name, self.advance) >= self.advance
        if advance and self.wait.get(name, 0) > 0:
            self.wait[name] -= 1
            advance = False
        store.outside_transaction("reserve against a budget")
        with store.connection() as conn:
            safe = None
            if advance:
                safe = backend.newest_id(conn, self.model)
                if safe is None:
                    self.wait[name] = self.advance
            with backend.locking_transaction(database):
                now, plan, held, dead, replaced, marks = self._read_locked(conn, name, run)
                moment = now.timestamp()
                if dead:
                    self._bury(conn, moment)
                for _attempt in range(SUMS):
                    self.past[name] = max(
                        self._check(conn, budget, marks.get(budget.name), now, safe, None,
                                    replaced, held.get(budget.name, 0.0), usd)
                        for budget in plan.checked)
                    # A replace or purge committed while the rows were read
                    # (a server reads each statement's latest): sum again.
                    found = self.run(conn, self.read_state).fetchone()
                    if (int(found[0]) if found else 0) == replaced:
                        break
                    replaced, marks = int(found[0]), {}
                else:
                    raise StoreBusyError(f"budget {name!r}: its executions kept changing "
                                         f"while it was summed ({SUMS} times); try again")
                conn.execute(*self.hold_rows(plan, hold, usd, moment + ttl))
        return Hold(store, self, plan, hold, usd)

    def write(self, hold: Hold, record: Any, key: Optional[str], replace: bool) -> int:
        """Record ``record`` (validated) in ``hold`` and end the hold, in one
        transaction; return the row id."""
        store = self.store
        with store.connection() as conn, self.backend.locking_transaction(self.database):
            row_id: int = store.record(record, key=key, replace=replace)
            self.settle(conn, hold, record, key, row_id)
        return row_id

    def settle(self, conn: Any, hold: Hold, record: Any, key: Optional[str],
               row_id: int) -> None:
        """In the transaction that recorded ``record`` as ``row_id`` in
        ``hold``: delete the hold (move the watermarks over the row), or, for
        a run whose cost is unknown, keep its estimate to the period's end."""
        checked = hold._plan.checked
        cost = self.cost(record)
        if cost is None:
            self.keep(conn, hold.id, checked)
        else:
            self.run(conn, self.delete_hold, hold.id)
            if key is None:
                self.follow(conn, hold, cost, row_id)

    def hold_rows(self, plan: Plan, hold: str, usd: float, expires: float) -> Statement:
        """The INSERT of ``hold``'s rows, one per budget checked, and its values."""
        values: List[Any] = []
        pid, host = os.getpid(), self.host
        for budget in plan.checked:
            values += (hold, budget.name, usd, expires, pid, host)
        return self._holds_sql(len(plan.checked)), values

    def _read_locked(self, conn: Any, name: str, run: Run) -> Tuple[Any, ...]:
        """On a server: the budgets, then a lock on each checked, then the
        clock, holds, replace count and watermarks (read after the locks)."""
        every = {row[0]: self._budget(tuple(row)) for row in self.run(conn, self.read_budgets)}
        plan = self.plan(every, name, run)
        # Each as its lock finds it: a budget set meanwhile has its new
        # limit, one deleted meanwhile no longer applies.
        locked = []
        for budget in plan.checked:
            found = self.run(conn, self.lock, budget.name).fetchall()
            if found:
                locked.append(self._budget(tuple(found[0])))
            elif budget is plan.named:
                raise UnknownBudgetError(name)
        names = tuple(b.name for b in locked)
        chosen = Plan(locked[names.index(name)], plan.scope, tuple(locked),
                      tuple(b for b in every.values() if b.name not in names), names)
        now = database_now(self.backend, conn)
        moment = now.timestamp()
        # Holds first (see the module's docstring).
        held, dead = {}, 0
        for budget_name, keep, gone in self.run(conn, self.read_holds, moment, moment):
            held[budget_name] = float(keep or 0)
            dead += int(gone or 0)
        # Before the rows: a replace committed after this read makes the
        # watermarks written now stale, so they will not be used.
        found = self.run(conn, self.read_state).fetchone()
        replaced = int(found[0]) if found else 0
        marks = {row[0]: row[1:] for row in self.run(conn, self.read_spend)}
        return now, chosen, held, dead, replaced, marks

    @staticmethod
    def plan(every: Dict[str, Budget], name: str, run: Run) -> Plan:
        """The budget ``name``, every budget whose scope contains the run's
        (``name``'s narrowed by ``run``), and the others."""
        named = every.get(name)
        if named is None:
            raise UnknownBudgetError(name)
        scope = narrowed(named, run)
        checked = sorted((b for b in every.values()
                          if b.covers(scope.repo, scope.model, scope.labels)),
                         key=lambda b: b.name)
        names = tuple(b.name for b in checked)
        return Plan(named, scope, tuple(checked),
                    tuple(b for b in every.values() if b.name not in names), names)

    def bounds(self, budget: Budget, now: Any) -> Bounds:
        """The start, end and stamp (``period_start``) of ``budget``'s
        period at ``now``, then its start and end as ``created_at`` reads."""
        known = self._bounds.get((budget.period, budget.tz))
        if known is not None and known[0] <= now < known[1]:
            return known
        start, end = period_bounds(budget.period, budget.tz, now)
        known = (start, end, start.isoformat(), format_timestamp(start), format_timestamp(end))
        self._bounds[(budget.period, budget.tz)] = known
        return known

    def _check(self, conn: Any, budget: Budget, mark: Any, now: Any, safe: Optional[int],
               newest: Optional[int], replaced: int, held: float, usd: float) -> int:
        """Raise :class:`BudgetExceededError` if ``budget`` cannot take
        ``usd`` more; move its watermark to ``safe`` (see the class); return
        how many rows of the period lie past it (none past ``newest``, on SQLite)."""
        start, end, stamp = self.bounds(budget, now)[:3]
        fresh = mark is None or mark[0] != stamp or int(mark[4]) != replaced
        if fresh:
            after, base = 0, 0.0
        else:
            after, base = int(mark[1]), float(mark[2])
        # On SQLite no row past ``safe`` exists: one read past ``after``.
        upto = safe if self.backend.dialect.row_lock and safe is not None and safe > after else None
        counted: _Part
        later: _Part
        if not fresh and newest is not None and newest <= after:
            counted, later = (0.0, {}, 0), (0.0, {}, 0)
        else:
            counted, later = self.spent(conn, budget, start, end, after, upto)
        if fresh:
            # The period's rows purged already count through the rollups:
            # what the budget's status says was spent, less the rows there.
            base = max(0.0, budgets.spent(self.database, budget, start, end)[0]
                       - counted[0] - later[0])
            base = 0.0 if base < 1e-6 else base
        spent = base + counted[0] + later[0]
        if spent + held + usd > budget.usd + SLACK:
            raise exceeded(budget, spent, held, usd)
        moved = upto if self.backend.dialect.row_lock else safe
        if moved is None or not (fresh or moved > after):
            return counted[2] + later[2]
        # Read only when the watermark moves: most reservations leave it.
        unpriced: Dict[str, int] = {} if fresh else json.loads(mark[3])
        for model, count in counted[1].items():
            unpriced[model] = unpriced.get(model, 0) + count
        self.run(conn, self.forget, budget.name)
        self.run(conn, self.remember, budget.name, stamp, moved, base + counted[0],
                 json.dumps(unpriced, sort_keys=True), replaced)
        return later[2]

    def follow(self, conn: Any, hold: Hold, cost: float, row_id: int) -> None:
        """Move the watermarks of ``hold``'s budgets over ``row_id``, of
        ``cost``, recorded in it: only where nothing else can commit below it
        (see :class:`~telemetry_orm.reservations_serial.SerialReserver`); on
        a server a smaller id may still commit, so nothing moves."""

    def keep(self, conn: Any, hold: str, budgets: Sequence[Budget]) -> None:
        """Make the rows of ``hold`` last to the end of each budget's period."""
        now = clock.pinned_now() or _dt.datetime.now(_dt.timezone.utc)
        for budget in budgets:
            end = self.bounds(budget, now)[1]
            self.run(conn, self.keep_hold, end.timestamp(), hold, budget.name)

    def cost(self, record: Any) -> Optional[float]:
        """``record``'s ``auto`` cost as the rows' read prices it (unrounded,
        so that many rows add up as closely as one read of them); ``None``
        when unpriced."""
        if record.cost_usd > 0:
            # SQLite's ROUND of the cost units: half away from zero.
            units = math.floor(float(record.cost_usd) * COST_UNITS_PER_USD + 0.5)
            return units / COST_UNITS_PER_USD
        price = self.prices.find(record.model)
        if price is None:
            return None
        cost: float = price.cost(record.input_tokens, record.output_tokens,
                                 record.cache_read_tokens, record.cache_creation_tokens)
        return cost

    def _holds_sql(self, count: int) -> str:
        """The INSERT of ``count`` hold rows."""
        found = self.insert_holds.get(count)
        if found is None:
            head, row = self._insert_hold
            found = self.insert_holds[count] = head + ", ".join([row] * count)
        return found

    def _budget(self, row: Tuple[Any, ...]) -> Budget:
        """The budget of a row (the same row gives the same object)."""
        found = self._budgets.get(row)
        if found is None:
            found = Budget(row[0], float(row[1]), row[2], row[3], row[4], row[5],
                           json.loads(row[6]), float(row[7]))
            if len(self._budgets) > 1000:
                self._budgets.clear()
            self._budgets[row] = found
        return found

    def _bury(self, conn: Any, moment: float) -> None:
        """Delete the dead holds, by id: on InnoDB a DELETE walking the
        budget index deadlocks with a ``hold.record`` deleting its own row."""
        holds = self.tables[1]
        dead = [row[0] for row in conn.execute(*_sql.render(self.database, holds.select(
            holds.id).where(holds.expires_at <= moment))).fetchall()]
        if dead:
            conn.execute(*_sql.render(self.database, holds.delete().where(holds.id.in_(dead))))




def exceeded(budget: Budget, spent: float, held: float, usd: float) -> BudgetExceededError:
    """The refusal of ``usd`` more by ``budget``, with ``spent`` and ``held``."""
    return BudgetExceededError(budget.name, spent_usd=round(spent, 6), held_usd=round(held, 6),
                               limit_usd=budget.usd, estimate_usd=usd)


def narrowed(budget: Budget, run: Run) -> Budget:
    """``budget`` with its scope narrowed to a run's ``(repo, model,
    labels)``; a run outside the budget's scope is refused, naming the field."""
    repo, model, labels = run
    for field, mine, theirs in (("repo", budget.repo, repo), ("model", budget.model, model)):
        if mine is not None and theirs is not None and theirs != mine:
            raise TelemetryValidationError(
                field, f"{theirs!r} is outside budget {budget.name!r} ({field} {mine!r})")
    for label, value in budget.labels.items():
        if labels.get(label, value) != value:
            raise TelemetryValidationError(
                f"labels.{label}", f"{labels[label]!r} is outside budget {budget.name!r} "
                                   f"({label}={value!r})")
    if repo is None and model is None and not labels:
        return budget
    return dataclasses.replace(budget, repo=budget.repo if repo is None else repo,
                               model=budget.model if model is None else model,
                               labels={**labels, **budget.labels})
