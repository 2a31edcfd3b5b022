"""Budgets: a limit in dollars on what matching executions spend in a day,
an ISO week or a month of a time zone, kept in the database.

A budget counts the executions of its scope (its ``repo`` and ``model``,
``None`` for any; every one of its ``labels``) created in the current
period. What they spent is the ``auto`` cost of a report: the recorded cost
where it is above 0, else the list price of the tokens. Executions of a
model without a price are counted apart (``unknown``), never as $0.

Its tables (created at the first budget call, beside ``executions``, which
they never touch): ``telemetry_orm_budgets`` (one row per budget),
``telemetry_orm_budget_holds`` (what live reservations hold, see
:mod:`telemetry_orm.reservations`) and ``telemetry_orm_budget_alerts``
(the alerts sent, see :mod:`telemetry_orm.alerts`) and
``telemetry_orm_budget_spend`` and ``telemetry_orm_budget_state`` (what
reservations counted so far).

>>> period_bounds("day", zones.check_zone("tz", "America/New_York"),
...               _dt.datetime(2026, 3, 8, 12, tzinfo=_dt.timezone.utc))[1].isoformat()
'2026-03-09T04:00:00+00:00'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import peewee
from peewee import CompositeKey, DoubleField, IntegerField, Model, TextField

from . import zones
from .checks import check_labels, check_optional_text, check_text, is_amount, to_utc
from .errors import TelemetryValidationError
from .reports import report
from .schema import KeyTextField, parse_timestamp
from .sql import render

PERIODS: Tuple[str, ...] = ("day", "week", "month")
STATUSES: Tuple[str, ...] = ("ok", "warning", "exceeded")
BUDGETS_TABLE = "telemetry_orm_budgets"
HOLDS_TABLE = "telemetry_orm_budget_holds"
ALERTS_TABLE = "telemetry_orm_budget_alerts"
SPEND_TABLE = "telemetry_orm_budget_spend"
STATE_TABLE = "telemetry_orm_budget_state"

#: A budget's name: a letter or digit, then letters, digits and ``_ . - / : @``,
#: at most 64 characters (``acme/api``, ``team:platform``, ``monthly-org``).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/:@]{0,63}")


@dataclasses.dataclass(frozen=True)
class Budget:
    """A budget as stored: ``usd`` per ``period`` (``day``, ``week`` or
    ``month``) of the zone ``tz``, for the executions of ``repo`` and
    ``model`` (``None``: any) carrying every one of ``labels``; ``warning``
    from ``warn_at`` of the limit on."""

    name: str
    usd: float
    period: str = "month"
    tz: str = "UTC"
    repo: Optional[str] = None
    model: Optional[str] = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    warn_at: float = 0.8

    def covers(self, repo: Optional[str], model: Optional[str],
               labels: Mapping[str, str]) -> bool:
        """Whether an execution (or a narrower budget's scope) of ``repo``,
        ``model`` and ``labels`` falls in this budget's scope."""
        return ((self.repo is None or self.repo == repo)
                and (self.model is None or self.model == model)
                and all(labels.get(k) == v for k, v in self.labels.items()))

    def as_dict(self) -> Dict[str, Any]:
        """The budget as plain values (``labels`` a ``dict``)."""
        return {**dataclasses.asdict(self), "labels": dict(self.labels)}


def check_name(name: Any) -> str:
    """A budget's name, checked (see :data:`_NAME`)."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise TelemetryValidationError(
            "name", f"must be 1 to 64 characters, a letter or digit first, then letters, "
                    f"digits, '_', '.', '-', '/', ':' or '@', got {name!r}")
    return name


def check_budget(name: Any, *, usd: Any, period: Any = "month", tz: Any = "UTC",
                 repo: Any = None, model: Any = None, labels: Any = None,
                 warn_at: Any = 0.8) -> Budget:
    """A :class:`Budget` from arguments checked one by one; a bad one raises
    :class:`~telemetry_orm.TelemetryValidationError` naming it."""
    check_name(name)
    if not is_amount(usd) or not math.isfinite(float(usd)) or float(usd) < 0:
        raise TelemetryValidationError("usd", f"must be a finite number >= 0, got {usd!r}")
    if period not in PERIODS:
        raise TelemetryValidationError(
            "period", f"must be one of {', '.join(PERIODS)}, got {period!r}")
    zone = zones.zone_name(zones.check_zone("tz", tz))
    if (not is_amount(warn_at) or not math.isfinite(float(warn_at))
            or not 0 < float(warn_at) <= 1):
        raise TelemetryValidationError(
            "warn_at", f"must be a share of the limit in (0, 1], got {warn_at!r}")
    return Budget(name, float(usd), period, zone, check_optional_text("repo", check_text(
                      "repo", repo)), check_optional_text("model", check_text("model", model)),
                  dict(check_labels("labels", {} if labels is None else labels)),
                  float(warn_at))


# --- Tables ----------------------------------------------------------------------


class BudgetRow(Model):
    """One budget (see :class:`Budget`); ``labels`` is JSON, sorted by name."""

    budget = KeyTextField(primary_key=True)
    usd = DoubleField()
    period = TextField()
    tz = TextField()
    repo = TextField(null=True)
    model = TextField(null=True)
    labels = TextField()
    warn_at = DoubleField()

    class Meta:
        table_name = BUDGETS_TABLE


class BudgetHold(Model):
    """What a live reservation holds against one budget (one row per budget
    it checked); it stops counting at ``expires_at`` (seconds since the
    epoch, by the database's clock)."""

    id = peewee.AutoField()
    # Unindexed: the table holds the live holds only, and each index would
    # be one more page written by every reservation.
    hold = KeyTextField()
    budget = KeyTextField()
    usd = DoubleField()
    expires_at = DoubleField()
    pid = IntegerField()  # -1 (KEPT): an unpriced run's hold, kept to its period's end
    host = TextField()

    class Meta:
        table_name = HOLDS_TABLE


class BudgetAlert(Model):
    """An alert claimed (``sending``) or sent, once per budget, period and
    threshold (``warning`` or ``exceeded``)."""

    budget = KeyTextField()
    period_start = KeyTextField()
    threshold = KeyTextField()
    state = TextField()
    at = DoubleField()

    class Meta:
        table_name = ALERTS_TABLE
        primary_key = CompositeKey("budget", "period_start", "threshold")


class BudgetSpend(Model):
    """What a budget's scope spent in the period starting ``period_start``
    (ISO text) by the rows with ids up to ``through_id`` (see
    :mod:`telemetry_orm.reservations`): a reservation adds only the rows past
    it. ``unpriced``: JSON, executions of unpriced models by model."""

    budget = KeyTextField(primary_key=True)
    period_start = KeyTextField()
    through_id = peewee.BigIntegerField()
    spent_usd = DoubleField()
    unpriced = TextField()
    #: :class:`BudgetState`'s ``replaced`` when it was summed: another one
    #: means a row below ``through_id`` changed since.
    replaced = peewee.BigIntegerField()

    class Meta:
        table_name = SPEND_TABLE


class BudgetState(Model):
    """One row (``id`` 1): how many times a row was replaced
    (``record(key=…, replace=True)``) since the budget tables were made."""

    id = IntegerField(primary_key=True)
    replaced = peewee.BigIntegerField()

    class Meta:
        table_name = STATE_TABLE


MODELS = (BudgetRow, BudgetHold, BudgetAlert, BudgetSpend, BudgetState)


def purging(spend: Any, state: Any, fold: Any) -> Any:
    """A purge chunk's ``fold`` (see :data:`~telemetry_orm.backends.base.Fold`),
    then, in the chunk's transaction, the reservations' watermarks made
    stale (as a replaced row makes them, see :mod:`telemetry_orm.reservations`)
    when a row the chunk deletes lies past one of them: a reservation adds
    the rows past its watermark, and would not find those (an import or
    ``record(at=…)`` gives new ids to old rows). Their spend then counts
    through the rollups, as the budget's status counts it."""
    database = spend._meta.database
    lowest = render(database, spend.select(peewee.fn.MIN(spend.through_id)))
    stale = render(database, state.update(replaced=state.replaced + 1))

    def run(conn: Any, rows: Any, most: Optional[int]) -> None:
        fold(conn, rows, most)
        mark = conn.execute(*lowest).fetchone()[0]
        if mark is not None and (most is None or int(mark) < most):
            conn.execute(*stale)

    return run


def to_row(budget: Budget) -> Dict[str, Any]:
    """The column values of ``budget``."""
    return {"budget": budget.name, "usd": budget.usd, "period": budget.period,
            "tz": budget.tz, "repo": budget.repo, "model": budget.model,
            "labels": json.dumps(dict(budget.labels), sort_keys=True), "warn_at": budget.warn_at}


def from_row(row: Any) -> Budget:
    """The :class:`Budget` of a row of ``telemetry_orm_budgets``."""
    return Budget(row.budget, float(row.usd), row.period, row.tz, row.repo, row.model,
                  json.loads(row.labels), float(row.warn_at))


# --- Periods and status ------------------------------------------------------------


def database_now(backend: Any, conn: Any) -> _dt.datetime:
    """The database clock's "now" (or the pinned one, see :mod:`telemetry_orm.clock`),
    aware UTC."""
    now = backend.cutoff(conn, 0)
    return parse_timestamp(now) if isinstance(now, str) else to_utc(now)


def period_bounds(period: str, zone: Any, now: _dt.datetime
                  ) -> Tuple[_dt.datetime, _dt.datetime]:
    """The start and end (aware UTC) of the ``period`` holding ``now`` in
    ``zone``: from local midnight of the day, of the ISO week's Monday or of
    the month's 1st, to the next one. Clock changes make a day 23 or 25
    hours long, a month 743 or 745 hours."""
    zone = zones.check_zone("tz", zone)
    today = to_utc(now).astimezone(zone).date()
    if period == "day":
        first, following = today, today + _dt.timedelta(days=1)
    elif period == "week":
        first = today - _dt.timedelta(days=today.weekday())
        following = first + _dt.timedelta(days=7)
    elif period == "month":
        first = today.replace(day=1)
        following = (first + _dt.timedelta(days=32)).replace(day=1)
    else:
        raise TelemetryValidationError("period", f"must be one of {', '.join(PERIODS)}")
    midnight = _dt.time()
    return (zones.wall_to_utc(_dt.datetime.combine(first, midnight), zone),
            zones.wall_to_utc(_dt.datetime.combine(following, midnight), zone))


@dataclasses.dataclass(frozen=True)
class BudgetStatus:
    """A budget in its current period (see :func:`status`)."""

    budget: Budget
    period_start: _dt.datetime
    period_end: _dt.datetime
    spent_usd: float
    limit_usd: float
    remaining_usd: float
    #: spent / limit (``inf`` for a $0 limit with spend, 0 without).
    share: float
    #: Spent at the period's rate so far, carried to its end.
    projected_usd: float
    #: Executions whose cost is unknown (their model has no price): not in
    #: ``spent_usd``.
    unknown: int
    #: Those executions by model.
    unpriced: Mapping[str, int]
    #: ``ok``, ``warning`` (share >= warn_at) or ``exceeded`` (spent >= limit).
    status: str
    now: _dt.datetime

    def as_dict(self) -> Dict[str, Any]:
        """Plain values for JSON (instants as ISO text)."""
        return {"budget": self.budget.name, "status": self.status,
                "period": self.budget.period, "tz": self.budget.tz,
                "period_start": self.period_start.isoformat(),
                "period_end": self.period_end.isoformat(),
                "spent_usd": self.spent_usd, "limit_usd": self.limit_usd,
                "remaining_usd": self.remaining_usd,
                "share": None if math.isinf(self.share) else round(self.share, 6),
                "projected_usd": self.projected_usd, "unknown": self.unknown,
                "unpriced": dict(self.unpriced)}


def spent(database: Any, budget: Budget, start: _dt.datetime, end: _dt.datetime
          ) -> Tuple[float, Dict[str, int]]:
    """What the executions of ``budget``'s scope created in ``[start, end)``
    spent (``auto`` cost, rolled-up history included), and the unpriced
    ones by model."""
    scope: Dict[str, Any] = {}
    if budget.labels:
        scope["labels"] = dict(budget.labels)
    found = report(database, since=start, until=end, repo=budget.repo, model=budget.model,
                   group_by=(), cost="auto", p95=False, **scope)
    return float(found.totals.cost_usd or 0.0), dict(found.unpriced)


def judge(budget: Budget, spent_usd: float, unpriced: Mapping[str, int],
          bounds: Tuple[_dt.datetime, _dt.datetime], now: _dt.datetime) -> BudgetStatus:
    """The :class:`BudgetStatus` of ``budget`` having spent ``spent_usd`` by ``now``."""
    start, end = bounds
    limit = budget.usd
    share = spent_usd / limit if limit > 0 else (math.inf if spent_usd > 0 else 0.0)
    elapsed = (now - start).total_seconds()
    length = (end - start).total_seconds()
    projected = spent_usd * length / elapsed if elapsed > 0 else spent_usd
    if spent_usd >= limit:
        state = "exceeded"
    elif share >= budget.warn_at:
        state = "warning"
    else:
        state = "ok"
    return BudgetStatus(budget, start, end, round(spent_usd, 6), limit,
                        round(limit - spent_usd, 6), share, round(projected, 6),
                        sum(unpriced.values()), dict(unpriced), state, now)


def status(database: Any, budget: Budget, now: _dt.datetime) -> BudgetStatus:
    """``budget`` in the period holding ``now``: spent, remaining, share,
    projection, unknown cost, and ``ok``, ``warning`` or ``exceeded``."""
    bounds = period_bounds(budget.period, budget.tz, now)
    spent_usd, unpriced = spent(database, budget, *bounds)
    return judge(budget, spent_usd, unpriced, bounds, now)
