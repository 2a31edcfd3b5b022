"""Reservations on an engine whose writers take turns (SQLite, its file's
write lock): :class:`~telemetry_orm.reservations.Reserver`'s statements,
with as little Python between them as the checks allow.

A reservation takes the file's write lock first (``BEGIN IMMEDIATE``), so
every id given out is committed, and reads everything it needs in one
statement: per budget its columns, its live holds and its watermark, then
the replace count and the largest id. No row past the largest id means no
row to sum past a watermark standing there; the watermarks move over every
row a reservation sums, and ``hold.record`` moves them over its own row
(:meth:`SerialReserver.follow`): in a loop of reservations, each reads
nothing else. It moves them only under the replace count its reservation
read: a replace, a purge past a watermark, ``set_budget`` and
``delete_budget`` count in it, so a budget narrowed or set again while the
run went on never counts a row it no longer covers. Which budgets a run
falls in is worked out once per set of budgets and run
(:meth:`SerialReserver.plan_of`).

The transactions run on this thread's connection under the store's gate,
as every write of the store does; inside a transaction already open there
(an application's), a reservation is refused and ``hold.record`` takes a
savepoint through the general path.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from . import clock
from .backends.base import in_transaction_error
from .budgets import Budget
from .reservations import NO_RUN, SLACK, Bounds, Hold, Plan, Reserver, Run, Statement, exceeded

_T = TypeVar("_T")

#: Plans kept, at most (a new set of budgets or a new run adds one).
PLANS = 256

#: The UPDATE of watermarks over a row, per period: its SQL, the budgets'
#: names, the period's stamp, start and end (as ``created_at`` reads).
Moves = Tuple[Tuple[str, Tuple[str, ...], str, str, str], ...]


class SerialReserver(Reserver):
    """The reservations of a store whose writers take turns (see the module)."""

    def __init__(self, store: Any, tables: Any) -> None:
        super().__init__(store, tables)
        rows, holds, _, spend, state = tables
        p, q, table = self.database.param, self.quoted, self.table_of

        #: A row per budget: its columns, what its live holds keep, how many
        #: holds are dead (of any budget), its watermark, then the replace
        #: count and the largest id.
        self.read_all: Statement = (
            f"SELECT b.{q('budget')}, b.{q('usd')}, b.{q('period')}, b.{q('tz')}, "
            f"b.{q('repo')}, b.{q('model')}, b.{q('labels')}, b.{q('warn_at')}, "
            f"(SELECT TOTAL({q('usd')}) FROM {table(holds)} AS h "
            f"WHERE h.{q('budget')} = b.{q('budget')} AND {q('expires_at')} > {p}), "
            f"(SELECT COUNT(*) FROM {table(holds)} WHERE {q('expires_at')} <= {p}), "
            f"s.{q('period_start')}, s.{q('through_id')}, "
            f"s.{q('spent_usd')}, s.{q('unpriced')}, s.{q('replaced')}, "
            f"(SELECT {q('replaced')} FROM {table(state)}), "
            f"(SELECT MAX({q('id')}) FROM {table(self.model)}) "
            f"FROM {table(rows)} AS b "
            f"LEFT JOIN {table(spend)} AS s ON s.{q('budget')} = b.{q('budget')}", [])
        self._plans: Dict[Tuple[Any, ...], Tuple[Plan, Tuple[int, ...]]] = {}
        self._follow = (
            f"UPDATE {table(spend)} SET {q('through_id')} = {p}, "
            f"{q('spent_usd')} = {q('spent_usd')} + {p} WHERE {q('budget')} IN (",
            f") AND {q('through_id')} = {p} AND {q('period_start')} = {p} "
            f"AND {q('replaced')} = {p} AND (SELECT {q('replaced')} FROM {table(state)}) = {p} "
            f"AND EXISTS (SELECT 1 FROM {table(self.model)} WHERE {q('id')} = {p} "
            f"AND {q('created_at')} >= {p} AND {q('created_at')} < {p})")
        self._follows: Dict[int, str] = {}
        self._moves: Dict[Tuple[Any, ...], Moves] = {}

    def reserve(self, name: str, usd: float, ttl: float, run: Run = NO_RUN) -> Hold:
        hold = os.urandom(16).hex()

        def check_and_hold(conn: Any) -> Tuple[Plan, int, Any]:
            # Read once the lock is held (it may be waited for). SQLite's
            # clock is this machine's: no statement needed to read it.
            now = clock.pinned_now() or _dt.datetime.now(_dt.timezone.utc)
            moment = now.timestamp()
            plan, replaced = self._reserve(conn, name, usd, run, now, moment)
            conn.execute(*self.hold_rows(plan, hold, usd, moment + ttl))
            return plan, replaced, now

        done = self._immediately(check_and_hold)
        if done is None:
            raise in_transaction_error(self.store.path, "reserve against a budget")
        plan, replaced, now = done
        made = Hold(self.store, self, plan, hold, usd)
        # What hold.record's UPDATE needs, and the replace count it was read
        # under: after a replace, a purge past a watermark or a budget set
        # again, the watermarks stay and the next reservation reads the row.
        made.moves = (self.moves(plan, now), replaced)
        return made

    def _immediately(self, body: Callable[[Any], _T]) -> Optional[_T]:
        """``body(conn)`` in one ``BEGIN IMMEDIATE`` transaction on this
        thread's connection, under the store's gate, and its result; ``None``,
        nothing run, when a transaction is open on the connection already."""
        backend, gate = self.backend, self.store.gate
        with gate.writing():
            gate.check_open()
            try:
                conn = self.database.connection()
                if conn.in_transaction:
                    return None
                conn.execute("BEGIN IMMEDIATE")
                try:
                    done = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except backend.driver_errors as exc:
                raise backend.translate(exc) from exc
        return done

    def _reserve(self, conn: Any, name: str, usd: float, run: Run, now: Any,
                 moment: float) -> Tuple[Plan, int]:
        """The check, the write lock held: the plan of the budgets checked,
        and the replace count read."""
        rows = conn.execute(self.read_all[0], (moment, moment)).fetchall()
        plan, places = self.plan_of(rows, name, run)
        if rows[0][9]:
            self._bury(conn, moment)
        replaced, newest = rows[0][15] or 0, rows[0][16] or 0
        for budget, place in zip(plan.checked, places, strict=True):
            row = rows[place]
            held = row[8] or 0.0
            if (row[11] is not None and row[11] >= newest and row[14] == replaced
                    and row[10] == self.bounds(budget, now)[2]):
                # Its watermark, of this period and replace count, stands at
                # the newest row: what it says was spent is all there is.
                if row[12] + held + usd > budget.usd + SLACK:
                    raise exceeded(budget, row[12], held, usd)
                continue
            mark = None if row[11] is None else row[10:15]
            self._check(conn, budget, mark, now, newest, newest, replaced, held, usd)
        return plan, replaced

    def plan_of(self, rows: List[Any], name: str, run: Run
                ) -> Tuple[Plan, Tuple[int, ...]]:
        """The plan of a reservation of ``run`` against ``name`` among the
        budgets read (``rows``), and the place of each budget checked in
        them; the same budgets and run give the same plan."""
        repo, model, labels = run
        key = (name, repo, model, tuple(sorted(labels.items())) if labels else (),
               *[row[:8] for row in rows])
        found = self._plans.get(key)
        if found is None:
            every: Dict[str, Budget] = {row[0]: self._budget(tuple(row[:8])) for row in rows}
            plan = self.plan(every, name, run)
            places = [row[0] for row in rows]
            found = (plan, tuple(places.index(b.name) for b in plan.checked))
            if len(self._plans) >= PLANS:
                self._plans.clear()
            self._plans[key] = found
        return found

    def write(self, hold: Hold, record: Any, key: Optional[str], replace: bool) -> int:
        def record_and_settle(conn: Any) -> int:
            row_id: int = self.store.record(record, key=key, replace=replace)
            self.settle(conn, hold, record, key, row_id)
            return row_id

        row_id = self._immediately(record_and_settle)
        if row_id is None:
            # Inside an application's transaction: a savepoint in it.
            return super().write(hold, record, key, replace)
        return row_id

    def follow(self, conn: Any, hold: Hold, cost: float, row_id: int) -> None:
        """Move the watermarks of ``hold``'s budgets that stand just below
        ``row_id`` (recorded inside the hold, the write lock held) over it,
        adding its ``cost``: the next reservation then has no row to read
        past them. Only in the period they stood in at the reservation (the
        row's ``created_at`` in it) and under the same replace count."""
        moves, replaced = hold.moves
        for sql, names, stamp, start, end in moves:
            conn.execute(sql, [row_id, cost, *names, row_id - 1, stamp, replaced, replaced,
                               row_id, start, end])

    def moves(self, plan: Plan, now: Any) -> Moves:
        """Per period of ``plan``'s budgets at ``now``: the UPDATE moving
        their watermarks over a row, their names and the period's bounds."""
        spans = tuple(self.bounds(budget, now) for budget in plan.checked)
        key = (plan.names, spans)
        found = self._moves.get(key)
        if found is None:
            periods: Dict[Bounds, List[str]] = {}
            for budget, span in zip(plan.checked, spans, strict=True):
                periods.setdefault(span, []).append(budget.name)
            found = tuple((self._follow_sql(len(names)), tuple(names), stamp, start, end)
                          for (_, _, stamp, start, end), names in periods.items())
            if len(self._moves) >= PLANS:
                self._moves.clear()
            self._moves[key] = found
        return found

    def _follow_sql(self, count: int) -> str:
        """The UPDATE moving ``count`` watermarks over one row."""
        found = self._follows.get(count)
        if found is None:
            head, tail = self._follow
            found = self._follows[count] = head + ", ".join([self.database.param] * count) + tail
        return found
