"""Budget alerts: one JSON POST per budget, period and threshold.

``telemetry-orm budget check --notify URL`` sends, for each budget in
``warning`` or ``exceeded``, a message with a Slack-compatible ``text``
line and the figures. Each is sent once per budget, period and threshold:
a check first claims it in ``telemetry_orm_budget_alerts`` (a row
``sending``), then POSTs, then marks it ``sent``. A failed POST deletes the
claim, so the next check tries again; a claim left ``sending`` by a check
that died is taken over after :data:`STALE` seconds.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional, Sequence

from . import sql as _sql
from .budgets import BudgetStatus
from .errors import TelemetryError

#: Seconds a POST may take (connecting and answering).
TIMEOUT = 10.0

#: Seconds after which a claim still ``sending`` is taken over.
STALE = 60.0

Post = Callable[[str, Mapping[str, Any], float], None]


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One alert tried: to whom, and the error (``None``: delivered)."""

    budget: str
    threshold: str
    error: Optional[str] = None


def message(status: BudgetStatus) -> Dict[str, Any]:
    """The body of an alert: a ``text`` line (Slack's incoming webhooks
    show it) and the figures."""
    budget = status.budget
    word = "exceeded" if status.status == "exceeded" else "reached its warning threshold"
    text = (f"Budget {budget.name} {word}: ${status.spent_usd:,.2f} of ${status.limit_usd:,.2f} "
            f"this {budget.period} ({status.period_start:%Y-%m-%d} to "
            f"{status.period_end:%Y-%m-%d}, {budget.tz}); projected "
            f"${status.projected_usd:,.2f}")
    if status.unknown:
        text += f"; {status.unknown} executions of unpriced models not counted"
    return {"text": text, "budget": budget.name, "status": status.status,
            "spent_usd": status.spent_usd, "limit_usd": status.limit_usd,
            "period_start": status.period_start.isoformat(),
            "period_end": status.period_end.isoformat(),
            "projected_usd": status.projected_usd, "unknown": status.unknown}


def post(url: str, body: Mapping[str, Any], timeout: float = TIMEOUT) -> None:
    """POST ``body`` as JSON to ``url``; an answer other than 2xx, or none
    within ``timeout`` seconds, raises :class:`OSError`."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "telemetry-orm"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            answer.read()
    except urllib.error.HTTPError as exc:
        raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise OSError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def notify(connection: Callable[[], ContextManager[Any]], backend: Any, database: Any,
           alerts: Any, url: str, statuses: Sequence[BudgetStatus], *,
           timeout: float = TIMEOUT, post: Post = post) -> List[Delivery]:
    """Send the alerts of ``statuses`` not sent yet (see the module);
    return one :class:`Delivery` per alert tried."""
    tried = []
    for status in statuses:
        if status.status not in ("warning", "exceeded"):
            continue
        key = (status.budget.name, status.period_start.isoformat(), status.status)
        if not _claim(connection, backend, database, alerts, key):
            continue
        try:
            post(url, message(status), timeout)
        except Exception as exc:  # noqa: BLE001 - reported, retried next time
            _settle(connection, backend, database, alerts, key, sent=False)
            tried.append(Delivery(key[0], key[2], str(exc) or type(exc).__name__))
            continue
        _settle(connection, backend, database, alerts, key, sent=True)
        tried.append(Delivery(key[0], key[2]))
    return tried


def _where(alerts: Any, key: Sequence[str]) -> Any:
    return ((alerts.budget == key[0]) & (alerts.period_start == key[1])
            & (alerts.threshold == key[2]))


def _claim(connection: Callable[[], ContextManager[Any]], backend: Any, database: Any,
           alerts: Any, key: Sequence[str]) -> bool:
    """Claim the alert ``key``; false when it was sent, or another check
    is sending it."""
    now = time.time()
    try:
        with connection() as conn, backend.locking_transaction(database):
            found = conn.execute(*_sql.render(database, alerts.select(
                alerts.state, alerts.at).where(_where(alerts, key)))).fetchone()
            if found is None:
                conn.execute(*_sql.render(database, alerts.insert(
                    budget=key[0], period_start=key[1], threshold=key[2], state="sending",
                    at=now)))
                return True
            if found[0] == "sending" and now - float(found[1]) > STALE:
                conn.execute(*_sql.render(database, alerts.update(at=now).where(
                    _where(alerts, key))))
                return True
            return False
    except TelemetryError:
        # Two checks inserting at once on a server: the other one has it.
        with connection() as conn:
            if conn.execute(*_sql.render(database, alerts.select(alerts.state).where(
                    _where(alerts, key)))).fetchone() is not None:
                return False
        raise


def _settle(connection: Callable[[], ContextManager[Any]], backend: Any, database: Any,
            alerts: Any, key: Sequence[str], *, sent: bool) -> None:
    with connection() as conn, backend.locking_transaction(database):
        query = (alerts.update(state="sent", at=time.time()) if sent else alerts.delete())
        conn.execute(*_sql.render(database, query.where(_where(alerts, key))))
