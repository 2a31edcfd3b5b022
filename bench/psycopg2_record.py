"""What ``store.record()`` costs on an application's psycopg2-driven
``PostgresqlDatabase`` against the same parameterised ``INSERT … RETURNING
id`` through one plain psycopg2 connection (autocommit, as peewee runs it).

    python bench/psycopg2_record.py [--full]   # needs TELEMETRY_TEST_POSTGRES_URL

Part of ``python -m bench`` (and ``--quick``); skipped, with the reason,
without a server or without psycopg2. Each side writes into a fresh schema
of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, List

if __package__ in (None, ""):  # run as a script: python bench/psycopg2_record.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.data import records  # noqa: E402
from bench.timing import Result, Settings, paired, per_item, us  # noqa: E402
from telemetry_orm import FIELD_NAMES, create_telemetry_store  # noqa: E402

CASE = "record() on a psycopg2 app database, per row"
TARGET = 1.2


def psycopg2_record(settings: Settings) -> List[Result]:
    """Target: ≤ 1.2× plain psycopg2, median of the per-round ratios."""
    server = os.environ.get("TELEMETRY_TEST_POSTGRES_URL", "")
    try:
        import peewee
        import psycopg2
        from playhouse import db_url
    except ImportError:
        return [Result(CASE, None, "", target=f"<= {TARGET}x",
                       note="skipped: psycopg2 is not installed")]
    if not server:
        return [Result(CASE, None, "", target=f"<= {TARGET}x",
                       note="skipped: set TELEMETRY_TEST_POSTGRES_URL")]
    n = 200 if settings.quick else 1000
    pool = records(n)
    rows = [r.as_row() for r in pool]
    sql = (f"INSERT INTO executions ({', '.join(FIELD_NAMES)}) "
           f"VALUES ({', '.join(['%s'] * len(FIELD_NAMES))}) RETURNING id")
    schemas = [f"bench_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    admin = psycopg2.connect(server)
    admin.autocommit = True
    for schema in schemas:
        admin.cursor().execute(f'CREATE SCHEMA "{schema}"')
    params = db_url.parse(server, unquote_password=True)
    name = params.pop("database")
    # No wait for the disk on commit, on both sides: what is left is what
    # the client does, which is what the ratio is about.
    options = [f"{params.get('options', '')} -c search_path={s} -c synchronous_commit=off"
               .strip() for s in schemas]
    database: Any = peewee.PostgresqlDatabase(name, **{**params, "options": options[0]})
    raw: Any = None
    try:
        store = create_telemetry_store(database)
        create_telemetry_store(peewee.PostgresqlDatabase(
            name, **{**params, "options": options[1]})).close()  # the same table there
        raw = psycopg2.connect(dbname=name, **{**params, "options": options[1]})
        raw.autocommit = True
        cursor = raw.cursor()
        database.connect()  # an application holds its connection

        def ours() -> float:
            def run() -> None:
                for entry in pool:
                    store.record(entry)

            return per_item(run, n)

        def baseline() -> float:
            def run() -> None:
                for row in rows:
                    cursor.execute(sql, row)
                    cursor.fetchone()

            return per_item(run, n)

        mine, theirs, ratio = paired(ours, baseline, settings.rounds)
        store.close()
    finally:
        if raw is not None:
            raw.close()
        database.close()
        for schema in schemas:
            admin.cursor().execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
    return [Result(CASE, us(mine), "us/row", us(theirs), ratio, TARGET, f"<= {TARGET}x",
                   "raw: one psycopg2 connection, cursor.execute(INSERT … RETURNING id)",
                   settings.rounds)]


if __name__ == "__main__":
    import tempfile

    quick = Settings.make(len(sys.argv) < 2 or sys.argv[1] != "--full",
                          Path(tempfile.gettempdir()))
    for result in psycopg2_record(quick):
        print(result)
