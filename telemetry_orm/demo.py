"""Realistic demo data, for ``telemetry-orm demo``; needs nothing but the
package itself.

>>> import datetime as dt
>>> from telemetry_orm import create_telemetry_store
>>> from telemetry_orm.demo import fill
>>> with create_telemetry_store(":memory:") as store:
...     fill(store, rows=100, now=dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc))
100

The rows come from :class:`random.Random` seeded with ``seed``: the same
arguments give the same rows. Tokens follow a rough shape of real agent runs
(log-normal counts, cache reads dominating) and ``cost_usd`` is their list
price for the chosen model.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import random
import uuid
from typing import Dict, List, Optional, Tuple, Type

from peewee import PeeweeException

from .engines import backend_for
from .errors import DatabaseError
from .prices import cost_of
from .record import TelemetryRecord
from .schema import TABLE_NAME
from .store import PeeweeTelemetryStore

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
EVENT_TYPES = ("pull_request.opened", "pull_request.synchronize", "issue_comment.created",
               "pull_request_review_comment.created", "issues.opened", "workflow_run.completed")
STOP_REASONS = ("end_turn", "max_tokens", "tool_use", "stop_sequence")
#: Each repository's team, and who asked for the runs (a sixth of the runs
#: start from a schedule: no user).
TEAMS = {"acme/api": "platform", "acme/web": "web", "acme/mobile": "mobile",
         "globex/billing": "payments", "initech/tps-reports": "platform",
         "umbrella/research": "research"}
USERS = {"alice@example.com": 30, "bob@example.com": 22, "carol@example.com": 16,
         "dave@example.com": 10, "erin@example.com": 6, "": 16}
CONCLUSIONS = {"success": 86, "failure": 8, "error": 4, "timeout": 2}

# Rows per record_many() call, all in one transaction.
_CHUNK = 1000


def _pick(rng: random.Random, weights: Dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def demo_record(rng: random.Random) -> TelemetryRecord:
    """One realistic execution drawn from ``rng``."""
    model = _pick(rng, MODELS)
    tokens = {
        "input_tokens": int(rng.lognormvariate(7.5, 1.0)),
        "output_tokens": int(rng.lognormvariate(7.0, 0.9)),
        "cache_read_tokens": int(rng.lognormvariate(10.5, 1.2)),
        "cache_creation_tokens": int(rng.lognormvariate(8.5, 1.1)),
    }
    cost = cost_of(model, **tokens)  # type: ignore[arg-type]  # four int keywords
    return TelemetryRecord(
        delivery_id=f"{DEMO_PREFIX}{_uuid(rng)}",
        repo=_pick(rng, REPOS),
        pr_number=rng.randint(1, 150) if rng.random() < 0.85 else None,
        event_type=rng.choice(EVENT_TYPES),
        provider="anthropic",
        model=model,
        duration_ms=int(rng.lognormvariate(10.8, 0.7)),
        cost_usd=0.0 if cost is None else round(cost, 6),
        conclusion=_pick(rng, CONCLUSIONS),
        session_id=_uuid(rng),
        num_turns=rng.randint(1, 40),
        stop_reason=rng.choice(STOP_REASONS),
        input_tokens=tokens["input_tokens"],
        output_tokens=tokens["output_tokens"],
        cache_read_tokens=tokens["cache_read_tokens"],
        cache_creation_tokens=tokens["cache_creation_tokens"],
    )


def fill(
    store: PeeweeTelemetryStore,
    rows: int = 5000,
    *,
    days: int = DAYS,
    now: Optional[_dt.datetime] = None,
    seed: int = 0,
) -> int:
    """Add ``rows`` realistic executions spread over the ``days`` days before
    ``now`` (default: the current UTC time) in one transaction; return how
    many were written. The same ``seed`` and ``now`` give the same rows.

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
    rng = random.Random(seed)
    who = random.Random(seed + 1)  # labels drawn apart: the same seed, the same rows
    span = days * 86400
    values: List[TelemetryRecord] = []
    instants: List[_dt.datetime] = []
    for _ in range(rows):
        record = demo_record(rng)
        instants.append(now - _dt.timedelta(seconds=rng.randint(0, span)))
        user = _pick(who, USERS)
        labels = {"team": TEAMS[record.repo], **({"user": user} if user else {})}
        values.append(dataclasses.replace(record, labels=labels))
    errors: Tuple[Type[BaseException], ...] = (PeeweeException, *store.backend.driver_errors)
    try:
        with store.database.atomic():
            for start in range(0, len(values), _CHUNK):
                store.record_many(values[start:start + _CHUNK],
                                  at=instants[start:start + _CHUNK])
    except errors as exc:
        raise store.backend.translate(exc) from exc  # a full disk, named with the path
    return len(values)


def _ours(table: str) -> bool:
    # The original's table, the tables this package adds beside it, and
    # SQLite's own (sqlite_sequence, sqlite_stat1).
    return table == TABLE_NAME or table.startswith(("telemetry_orm_", "sqlite_"))


def demo_rows(location: str, *, append: bool = False) -> int:
    """How many demo executions the database at ``location`` holds (0 when
    there is none yet), checked before the demo writes, by reading only.

    Raises :class:`~telemetry_orm.DatabaseError`, and changes nothing, for a
    database the demo must not write into: a file with tables of another
    program (the store would add its tables, set the file's schema version
    and switch it to WAL), one with real telemetry, one the store would
    refuse anyway, or (unless ``append``) one holding demo data already,
    whose figures a second run would double.
    """
    backend = backend_for(location)
    if backend.missing() is not None:
        return 0  # nothing there yet: the store creates it (or says why it cannot)
    database = backend.open_readonly(purpose="write")
    try:
        # A file's schema version and journal mode are the file owner's; a
        # server's schema holds other tables beside ours as a matter of course.
        foreign = [t for t in database.get_tables() if not _ours(t)] if backend.files() else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
            raise DatabaseError(
                f"{location}: holds tables of another program ({shown}); the demo writes "
                "only into a database of its own and has left this one untouched: "
                "give it another --db PATH")
        if not backend.has_table(backend.statements(database), TABLE_NAME):
            return 0
        # substr, not LIKE: SQLite's LIKE ignores case, and fill() does not.
        model_rows = database.execute_sql(
            f"SELECT COUNT(*), COUNT(CASE WHEN substr(delivery_id, 1, {len(DEMO_PREFIX)}) = "
            f"'{DEMO_PREFIX}' THEN 1 END) FROM {TABLE_NAME}").fetchone()
    finally:
        database.close()
    total, demo = int(model_rows[0]), int(model_rows[1])
    if total > demo:
        raise DatabaseError(
            f"{location}: already holds {total - demo:,} executions that are not demo "
            "data; give the demo a database of its own (--db PATH)")
    if demo and not append:
        raise DatabaseError(
            f"{location}: already holds {demo:,} demo executions, and another run would "
            "double every figure; pass --append to add to them, or give another --db PATH")
    return demo
