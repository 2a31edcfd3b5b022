"""Realistic demo data, for ``telemetry-orm demo`` (needs the ``testing`` extra).

>>> from telemetry_orm import create_telemetry_store
>>> from telemetry_orm.demo import fill
>>> with create_telemetry_store(":memory:") as store:
...     fill(store, rows=100)
100
"""

from __future__ import annotations

import datetime as _dt
import random
import uuid
from typing import Any, Dict, List, Optional

from peewee import chunked

from ..errors import DatabaseError
from ..store import PeeweeTelemetryStore
from .factories import TelemetryRecordFactory

#: Demo executions are spread over this many days before now.
DAYS = 60

#: Every demo row's ``delivery_id`` starts with this, so demo data is
#: recognisable (and never mixed into real telemetry).
DEMO_PREFIX = "demo-"

# A few repositories and models with uneven shares, as in real use.
REPOS = {
    "acme/api": 30,
    "acme/web": 22,
    "acme/mobile": 12,
    "globex/billing": 16,
    "initech/tps-reports": 8,
    "umbrella/research": 12,
}
MODELS = {"claude-sonnet-4-5": 62, "claude-haiku-4-5": 24, "claude-opus-4-1": 9,
          "claude-sonnet-4": 5}

# Rows per INSERT: 50 rows x 18 columns stays under SQLite's oldest limit of
# 999 bound parameters.
_CHUNK = 50


def _pick(weights: Dict[str, int]) -> str:
    return random.choices(list(weights), list(weights.values()))[0]


def fill(
    store: PeeweeTelemetryStore,
    rows: int = 5000,
    *,
    days: int = DAYS,
    now: Optional[_dt.datetime] = None,
) -> int:
    """Add ``rows`` realistic executions spread over the ``days`` days before
    ``now`` (default: the current UTC time) in one transaction; return how
    many were written.

    Refuses, with :class:`~telemetry_orm.DatabaseError` and nothing written,
    a store that already holds executions that are not demo data.
    """
    model = store.model
    real = model.select().where(
        model.delivery_id.is_null() | ~model.delivery_id.startswith(DEMO_PREFIX)
    ).count()
    if real:
        raise DatabaseError(
            f"{store.path}: already holds {real} executions that are not demo data; "
            "give the demo a database of its own (--db PATH)"
        )
    now = (now or _dt.datetime.now(_dt.timezone.utc)).replace(microsecond=0)
    span = days * 86400
    values: List[Dict[str, Any]] = []
    for _ in range(rows):
        record = TelemetryRecordFactory.build(
            delivery_id=f"{DEMO_PREFIX}{uuid.uuid4()}",
            repo=_pick(REPOS),
            model=_pick(MODELS),
            pr_number=random.randint(1, 150) if random.random() < 0.85 else None,
        )
        row = record.as_dict()
        row["created_at"] = now - _dt.timedelta(seconds=random.randint(0, span))
        values.append(row)
    with store.database.atomic():
        for chunk in chunked(values, _CHUNK):
            model.insert_many(chunk).execute()
    return len(values)
