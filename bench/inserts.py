"""Targets 1 and 2: ``record()`` per row and ``record_many()`` of 1,000 rows,
each against the same rows written by raw ``sqlite3`` with the same pragmas.
Peewee's own ``Model.create`` and ``insert_many`` are shown for reference."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import List

import peewee

from bench.data import RAW_INSERT, records
from bench.timing import Result, Settings, paired, per_item, store_and_raw, us
from telemetry_orm import create_telemetry_store

BATCH = 1000


def per_row(settings: Settings) -> List[Result]:
    """One row per call, autocommit, on a WAL file."""
    n = settings.rows_per_round
    pool = records(n)
    rows = [r.as_row() for r in pool]
    dicts = [r.as_dict() for r in pool]
    results = []

    def raw_round(conn: object) -> float:
        execute = conn.execute  # type: ignore[attr-defined]

        def run() -> None:
            for row in rows:
                execute(RAW_INSERT, row)

        return per_item(run, n)

    with store_and_raw(settings, "record") as (store, raw):
        record = store.record

        def ours() -> float:
            def run() -> None:
                for entry in pool:
                    record(entry)

            return per_item(run, n)

        mine, theirs, ratio = paired(ours, lambda: raw_round(raw), settings.rounds)
        results.append(Result(
            "record(TelemetryRecord), per row", us(mine), "us/row", us(theirs), ratio,
            1.15, "<= 1.15x", "raw: conn.execute(INSERT, row)", settings.rounds,
        ))

    with store_and_raw(settings, "record-dict") as (store, raw):
        record = store.record

        def ours_dict() -> float:
            def run() -> None:
                for entry in dicts:
                    record(entry)

            return per_item(run, n)

        mine, theirs, ratio = paired(ours_dict, lambda: raw_round(raw), settings.rounds)
        results.append(Result(
            "record(dict) with validation, per row", us(mine), "us/row", us(theirs), ratio,
            1.3, "<= 1.3x", "", settings.rounds,
        ))

    with store_and_raw(settings, "record-key") as (store, _raw):
        record = store.record
        def keyed() -> float:
            # GitHub's delivery ids are random GUIDs: keys land all over the b-tree.
            keys = [str(uuid.uuid4()) for _ in pool]

            def run() -> None:
                for entry, key in zip(pool, keys, strict=True):
                    record(entry, key=key)

            return per_item(run, n)

        def plain() -> float:
            def run() -> None:
                for entry in pool:
                    record(entry)

            return per_item(run, n)

        mine, theirs, ratio = paired(keyed, plain, settings.rounds)
        results.append(Result(
            "record(TelemetryRecord, key=...), per row", us(mine), "us/row", us(theirs), ratio,
            1.5, "<= 1.5x", "baseline: record() without a key, same store", settings.rounds,
        ))

    with store_and_raw(settings, "record-app") as (store, _raw):
        # The same file settings, on a peewee database the application owns.
        app_path = settings.workdir / "record-app-db.db"
        app_db = peewee.SqliteDatabase(str(app_path), pragmas={
            "journal_mode": "wal", "synchronous": "normal", "busy_timeout": 5000})
        app_store = create_telemetry_store(app_db)
        try:
            def on_app_db() -> float:
                def run() -> None:
                    for entry in pool:
                        app_store.record(entry)

                return per_item(run, n)

            def on_own_file() -> float:
                def run() -> None:
                    for entry in pool:
                        store.record(entry)

                return per_item(run, n)

            mine, theirs, ratio = paired(on_app_db, on_own_file, settings.rounds)
        finally:
            app_store.close()
            app_db.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{app_path}{suffix}").unlink(missing_ok=True)
        results.append(Result(
            "record() on the app's own SqliteDatabase", us(mine), "us/row", us(theirs), ratio,
            1.1, "<= 1.1x", "baseline: record() on a store's own file", settings.rounds,
        ))

    with store_and_raw(settings, "create") as (store, raw):
        create = store.model.create
        few = max(100, n // 5)

        def peewee_create() -> float:
            def run() -> None:
                for entry in dicts[:few]:
                    create(**entry)

            return per_item(run, few)

        def raw_few() -> float:
            execute = raw.execute

            def run() -> None:
                for row in rows[:few]:
                    execute(RAW_INSERT, row)

            return per_item(run, few)

        rounds = max(5, settings.rounds // 2)
        mine, theirs, ratio = paired(peewee_create, raw_few, rounds)
        results.append(Result(
            "peewee Model.create(**dict), per row", us(mine), "us/row", us(theirs), ratio,
            note="what record() avoids", rounds=rounds,
        ))
    return results


def batch(settings: Settings) -> List[Result]:
    """1,000 rows in one transaction."""
    pool = records(BATCH * settings.batches_per_round, seed=2)
    chunks = [pool[i:i + BATCH] for i in range(0, len(pool), BATCH)]
    row_chunks = [[r.as_row() for r in chunk] for chunk in chunks]
    dict_chunks = [[r.as_dict() for r in chunk] for chunk in chunks]
    total = len(pool)
    results = []

    def raw_round(conn: object) -> float:
        execute = conn.execute  # type: ignore[attr-defined]
        executemany = conn.executemany  # type: ignore[attr-defined]

        def run() -> None:
            for chunk in row_chunks:
                execute("BEGIN IMMEDIATE")
                executemany(RAW_INSERT, chunk)
                execute("COMMIT")

        return per_item(run, total)

    with store_and_raw(settings, "many") as (store, raw):
        def ours() -> float:
            def run() -> None:
                for chunk in chunks:
                    store.record_many(chunk)

            return per_item(run, total)

        mine, theirs, ratio = paired(ours, lambda: raw_round(raw), settings.rounds)
        results.append(Result(
            "record_many(1,000 TelemetryRecords)", us(mine), "us/row", us(theirs), ratio,
            1.25, "<= 1.25x", "raw: BEGIN IMMEDIATE; executemany; COMMIT", settings.rounds,
        ))

    with store_and_raw(settings, "many-dict") as (store, raw):
        def ours_dicts() -> float:
            def run() -> None:
                for chunk in dict_chunks:
                    store.record_many(chunk)

            return per_item(run, total)

        mine, theirs, ratio = paired(ours_dicts, lambda: raw_round(raw), settings.rounds)
        results.append(Result(
            "record_many(1,000 dicts) with validation", us(mine), "us/row", us(theirs), ratio,
            note="validation of each mapping included", rounds=settings.rounds,
        ))

    with store_and_raw(settings, "insert-many") as (store, raw):
        model = store.model
        atomic = store.database.atomic

        def peewee_insert_many() -> float:
            def run() -> None:
                for chunk in dict_chunks:
                    with atomic():
                        model.insert_many(chunk).execute()

            return per_item(run, total)

        rounds = max(5, settings.rounds // 2)
        mine, theirs, ratio = paired(peewee_insert_many, lambda: raw_round(raw), rounds)
        results.append(Result(
            "peewee insert_many(1,000 dicts) in atomic()", us(mine), "us/row", us(theirs),
            ratio, note="what record_many() avoids", rounds=rounds,
        ))
    return results
