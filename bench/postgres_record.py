"""What ``store.record()`` costs on PostgreSQL against plain psycopg.

    python bench/postgres_record.py [N] [POSTGRES_URL]

N (default 2,000) single-row inserts, each its own transaction, in a fresh
schema dropped afterwards: through a store (validation, a pooled connection
borrowed and handed back per call), and with one psycopg connection running
the same INSERT ... RETURNING id. Rounds alternate; prints the median time per
row of each and their ratio, measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from urllib.parse import quote, urlencode

import psycopg

from telemetry_orm import FIELD_NAMES, TelemetryRecord, create_telemetry_store

ROUNDS = 5


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    server = sys.argv[2] if len(sys.argv) > 2 else os.environ["TELEMETRY_TEST_POSTGRES_URL"]
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    options = urlencode({"options": f"-c search_path={schema}"}, quote_via=quote)
    url = f"{server}{'&' if '?' in server else '?'}{options}"
    record = TelemetryRecord(repo="acme/api", event_type="pull_request.opened",
                             model="claude-sonnet-4-5", conclusion="success",
                             input_tokens=1200, output_tokens=340, cost_usd=0.0087)
    entry = record.as_dict()
    sql = (f"INSERT INTO executions ({', '.join(FIELD_NAMES)}) "
           f"VALUES ({', '.join(['%s'] * len(FIELD_NAMES))}) RETURNING id")
    per_row = {"store.record(dict)": [], "psycopg execute": []}
    try:
        with create_telemetry_store(url) as store, psycopg.connect(url, autocommit=True) as raw:
            row = record.as_row()
            each = n // ROUNDS
            for _ in range(ROUNDS):
                started = time.perf_counter()
                for _ in range(each):
                    store.record(entry)
                per_row["store.record(dict)"].append((time.perf_counter() - started) / each)
                started = time.perf_counter()
                for _ in range(each):
                    raw.execute(sql, row).fetchone()
                per_row["psycopg execute"].append((time.perf_counter() - started) / each)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    base = statistics.median(per_row["psycopg execute"])
    for name, times in per_row.items():
        median = statistics.median(times)
        print(f"{name:20s} {median * 1e6:8.0f} µs/row  {median / base:5.2f}x psycopg")


if __name__ == "__main__":
    main()
