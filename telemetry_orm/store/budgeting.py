"""The store's budget methods (see :mod:`telemetry_orm.budgets`,
:mod:`telemetry_orm.reservations` and :mod:`telemetry_orm.alerts`): each
checks, then delegates."""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple, cast

from .. import alerts as _alerts
from .. import budgets as _budgets
from .. import reservations as _reservations
from .. import sql as _sql
from ..budgets import Budget, BudgetStatus, check_budget, check_name
from ..checks import check_labels, check_optional_text, check_text
from ..errors import TelemetryError, UnknownBudgetError
from ..reservations_serial import SerialReserver
from .opening import Host

#: The bound budgets, holds, alerts, spend and state models of a store.
BudgetTables = Tuple[Any, Any, Any, Any, Any]


class BudgetMethods:
    """Budgets, their status, reservations and alerts, for a store (mixed
    into :class:`~telemetry_orm.PeeweeTelemetryStore`)."""

    def _budget_tables(self) -> BudgetTables:
        """The budget tables, created at the first call."""
        made: Optional[BudgetTables] = self.__dict__.get("_budget_tables_made")
        if made is None:
            host = cast(Host, self)
            host.gate.check_open()
            opened = host.opened
            made = cast(BudgetTables, tuple(opened.tables.side(m) for m in _budgets.MODELS))
            # The labels table too: a labelled budget's reservations read it.
            opened.tables.create_missing(opened.backend, (*made, opened.tables.labels),
                                         outside_transaction="create its budget tables")
            _first_state(host, made[4])
            self.__dict__["_budget_tables_made"] = made
        return made

    def set_budget(self, name: str, *, usd: float, period: str = "month", tz: str = "UTC",
                   repo: Optional[str] = None, model: Optional[str] = None,
                   labels: Optional[Mapping[str, str]] = None, warn_at: float = 0.8) -> Budget:
        """Store the budget ``name`` (replacing one of that name): at most
        ``usd`` dollars per ``period`` (``"day"``, ``"week"`` or ``"month"``,
        starting at local midnight, on Monday, on the 1st in the zone
        ``tz``) for the executions of ``repo`` and ``model`` (``None``: any)
        carrying every one of ``labels``; ``warning`` from ``warn_at`` of it.

        >>> with create_telemetry_store(":memory:") as store:
        ...     store.set_budget("acme/api", usd=200, repo="acme/api").period
        'month'
        """
        budget = check_budget(name, usd=usd, period=period, tz=tz, repo=repo, model=model,
                              labels=labels, warn_at=warn_at)
        rows = self._budget_tables()[0]
        host = cast(Host, self)
        opened = host.opened
        values = _budgets.to_row(budget)
        with host.connection() as conn, opened.backend.locking_transaction(opened.database):
            # Changed in place: a reservation waiting on the row's lock then
            # reads the new values (a row deleted and inserted again would
            # be gone for it, and the new one not locked).
            # (Asked first: MySQL counts an UPDATE that changes nothing as 0 rows.)
            there = conn.execute(*_sql.render(opened.database, rows.select(rows.budget).where(
                rows.budget == budget.name))).fetchall()
            if there:
                conn.execute(*_sql.render(opened.database, rows.update(
                    {getattr(rows, k): v for k, v in values.items() if k != "budget"}).where(
                    rows.budget == budget.name)))
            else:
                conn.execute(*_sql.render(opened.database, rows.insert(values)))
            spend, state = self._budget_tables()[3:5]
            # Its scope may have changed: what reservations counted is summed
            # again, and a hold made before cannot move its watermark (see
            # :mod:`telemetry_orm.reservations_serial`).
            conn.execute(*_sql.render(opened.database,
                                      spend.delete().where(spend.budget == budget.name)))
            conn.execute(*_sql.render(opened.database,
                                      state.update(replaced=state.replaced + 1)))
            # Its period may have changed: the holds of unpriced runs last to its end.
            holds = self._budget_tables()[1]
            end = _budgets.period_bounds(budget.period, budget.tz, _budgets.database_now(
                opened.backend, conn))[1]
            conn.execute(*_sql.render(opened.database, holds.update(
                expires_at=end.timestamp()).where(
                (holds.budget == budget.name) & (holds.pid == _reservations.KEPT))))
        return budget

    def budgets(self) -> List[Budget]:
        """Every stored budget, by name."""
        rows = self._budget_tables()[0]
        with cast(Any, self).reading():
            return [_budgets.from_row(row) for row in rows.select().order_by(rows.budget)]

    def budget(self, name: str) -> Budget:
        """The budget ``name``; :class:`~telemetry_orm.UnknownBudgetError` if none."""
        check_name(name)
        rows = self._budget_tables()[0]
        with cast(Any, self).reading():
            row = rows.get_or_none(rows.budget == name)
        if row is None:
            raise UnknownBudgetError(name)
        return _budgets.from_row(row)

    def delete_budget(self, name: str) -> None:
        """Delete the budget ``name``, its holds and its alerts'
        memory; :class:`~telemetry_orm.UnknownBudgetError` if none."""
        check_name(name)
        tables = self._budget_tables()
        host = cast(Host, self)
        opened = host.opened
        with host.connection() as conn, opened.backend.locking_transaction(opened.database):
            gone = conn.execute(*_sql.render(opened.database, tables[0].delete().where(
                tables[0].budget == name))).rowcount
            for model in tables[1:4]:  # holds, alerts, spend
                conn.execute(*_sql.render(opened.database,
                                          model.delete().where(model.budget == name)))
            # A hold made before moves no watermark of a budget set again
            # under this name.
            conn.execute(*_sql.render(opened.database,
                                      tables[4].update(replaced=tables[4].replaced + 1)))
        if not gone:
            raise UnknownBudgetError(name)

    def budget_status(self, name: str) -> BudgetStatus:
        """The budget ``name`` in its current period (by the database's
        clock): start and end, spent (recorded cost above 0, else list
        price), limit, remaining, share, projection to the end, the
        executions of unpriced models (``unknown``, never counted as $0),
        and ``status``: ``exceeded`` when spent >= limit, else ``warning``
        when the share >= ``warn_at``, else ``ok``."""
        return self.budget_statuses([name])[0]

    def budget_statuses(self, names: Optional[Iterable[str]] = None) -> List[BudgetStatus]:
        """:meth:`budget_status` of each of ``names`` (default: every budget)."""
        chosen = self.budgets() if names is None else [self.budget(n) for n in names]
        opened = cast(Host, self).opened
        with cast(Any, self).reading() as database:
            now = _budgets.database_now(opened.backend, opened.backend.statements(database))
            return [_budgets.status(database, budget, now) for budget in chosen]

    def reserve(self, name: str, *, usd: float, ttl: float = _reservations.TTL,
                repo: Optional[str] = None, model: Optional[str] = None,
                labels: Optional[Mapping[str, str]] = None) -> _reservations.Hold:
        """Hold ``usd`` (an estimate) against the budget ``name`` and every
        budget the run falls in, until the block ends::

            with store.reserve("acme/api", usd=0.50, labels={"user": user}) as hold:
                result = run_agent()
                hold.record(entry_of(result), key=delivery_id)

        The run falls in ``name``'s scope, narrowed by what is known of it
        beforehand: ``repo``, ``model`` and ``labels`` (each must agree with
        ``name``'s scope); every budget whose scope contains that is checked
        (a budget of the whole organisation, or of the user named in
        ``labels``). ``hold.record`` refuses an entry outside that scope, or
        one a budget not checked would have counted (nothing is written):
        give the labels a per-user or per-team budget reads.

        Raises :class:`~telemetry_orm.BudgetExceededError` when, for one of
        them, spent + live holds + ``usd`` would pass its limit; the check
        and the hold are one transaction, atomic across processes (see
        :mod:`telemetry_orm.reservations`). ``hold.record`` writes the
        execution and ends the hold in one transaction; leaving the block
        without it ends the hold. A hold whose process died stops counting
        after ``ttl`` seconds. Refused inside a transaction of the
        application (:class:`~telemetry_orm.TransactionOpenError`): the hold
        must commit to be seen by other processes."""
        estimate = _reservations.check_estimate(usd, ttl)
        check_name(name)
        run: _reservations.Run = _reservations.NO_RUN
        if repo is not None or model is not None or labels:
            run = (check_optional_text("repo", check_text("repo", repo)),
                   check_optional_text("model", check_text("model", model)),
                   check_labels("labels", {} if labels is None else labels))
        elif labels is not None:
            check_labels("labels", labels)
        return self._reserver().reserve(name, estimate, float(ttl), run)

    def _reserver(self) -> _reservations.Reserver:
        """The store's reservations, made at the first."""
        found: Optional[_reservations.Reserver] = self.__dict__.get("_reserver_made")
        if found is None:
            tables = self._budget_tables()
            # A server's writers run at once: its reservations lock rows.
            found = (_reservations.Reserver(self, tables)
                     if cast(Host, self).opened.backend.dialect.row_lock
                     else SerialReserver(self, tables))
            self.__dict__["_reserver_made"] = found
        return found

    def notify_budgets(self, url: str, statuses: Iterable[BudgetStatus], *,
                       timeout: float = _alerts.TIMEOUT,
                       post: Optional[Callable[[str, Mapping[str, Any], float], None]] = None,
                       ) -> List[_alerts.Delivery]:
        """POST one alert to ``url`` for each of ``statuses`` in ``warning``
        or ``exceeded`` not yet sent for its budget, period and threshold
        (remembered in the database); return what was tried. A failed POST
        forgets its claim, so the next call sends it again."""
        host = cast(Host, self)
        opened = host.opened
        alerts = self._budget_tables()[2]
        return _alerts.notify(host.connection, opened.backend, opened.database, alerts, url,
                              list(statuses), timeout=timeout, post=post or _alerts.post)


def _first_state(host: Host, state: Any) -> None:
    """The state's one row, made once (by one of the processes doing it at once)."""
    opened = host.opened
    with host.connection() as conn:
        if conn.execute(*_sql.render(opened.database, state.select(state.id))).fetchone():
            return
    try:
        with host.connection() as conn, opened.backend.locking_transaction(opened.database):
            conn.execute(*_sql.render(opened.database, state.insert(id=1, replaced=0)))
    except TelemetryError:
        with host.connection() as conn:
            if not conn.execute(*_sql.render(opened.database,
                                             state.select(state.id))).fetchone():
                raise
