"""Copy the executions of a telemetry database into a store (usually a
SQLite file into PostgreSQL): the copy path behind ``telemetry-orm migrate``.

>>> result = migrate("telemetry.db", "postgresql://bot:secret@db/telemetry")  # doctest: +SKIP
>>> print(result.summary())                                                    # doctest: +SKIP

The source (a file path or URL of any engine) is opened read-only and
never changed. Rows are read in ``id``
order, in batches; each batch is validated as :class:`TelemetryRecord` values
and written in one transaction with ``created_at`` kept as it was.

Which rows were copied is recorded in the target, in the table
``telemetry_orm_migrated`` (source name, source row id, source
``created_at``), written in the same transaction as the rows. Running the
migration again therefore copies only what is new, even after an
interruption. The source name defaults to the file's absolute path; if a
different file later stands at that path (its row ids start again), the
migration notices that a copied id now has another ``created_at`` and stops,
asking for another ``source_name`` instead of skipping or duplicating rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import peewee

from . import exports as _exports
from . import imports as _imports
from . import keys as _keys
from . import labels as _labels
from .checks import check_count, check_instant, same_file
from .engines import backend_for
from .errors import DatabaseError, TelemetryValidationError
from .formats import printable
from .prices import PriceTable
from .record import FIELD_NAMES, TelemetryRecord
from .schema import LABELS_TABLE, TABLE_NAME, KeyTextField, format_timestamp, parse_timestamp
from .sql import quote, render
from .store import LOGGER_NAME, PeeweeTelemetryStore, create_telemetry_store
from .store.writes import TIMED_COLUMNS, Copy
from .tables import tables_of

#: Rows per batch: one read from the source, one transaction in the target.
BATCH_SIZE = 1000

#: The target's record of what was copied from where.
MIGRATED_TABLE = "telemetry_orm_migrated"

#: How many invalid rows a result lists by id and reason (all are counted).
INVALID_SHOWN = 20


@dataclasses.dataclass(frozen=True)
class MigrationProgress:
    """Where a running migration is, passed to ``progress`` after each batch."""

    #: Source rows looked at so far, of ``total``.
    done: int
    total: int
    copied: int
    skipped: int


@dataclasses.dataclass(frozen=True)
class MigrationResult:
    """What a migration did."""

    source: str
    target: str
    #: Rows in the source when the migration started.
    total: int
    #: Rows written to the target by this run.
    copied: int
    #: Rows skipped because an earlier run copied them.
    already_copied: int
    #: Rows not copied because they are not valid records: (source id, reason),
    #: the first :data:`INVALID_SHOWN` of them.
    invalid: Tuple[Tuple[int, str], ...]
    #: How many rows were invalid in all.
    invalid_count: int
    seconds: float

    @property
    def skipped(self) -> int:
        """Rows not written by this run, for either reason."""
        return self.already_copied + self.invalid_count

    def summary(self) -> str:
        """A few lines for people: what was copied and what was skipped, and why
        (names and values shown through :func:`~telemetry_orm.formats.printable`)."""
        rate = f", {self.copied / self.seconds:,.0f} rows/s" if self.copied and self.seconds else ""
        lines = [
            f"copied {self.copied:,} of {self.total:,} rows from {printable(self.source)} to "
            f"{printable(self.target)} in {self.seconds:.1f} s{rate}",
            f"skipped {self.skipped:,}: {self.already_copied:,} copied before, "
            f"{self.invalid_count:,} invalid",
        ]
        lines += [f"  invalid row id {row_id}: {printable(reason)}"
                  for row_id, reason in self.invalid]
        if self.invalid_count > len(self.invalid):
            lines.append(f"  … and {self.invalid_count - len(self.invalid):,} more")
        return "\n".join(lines)


class _Migrated(peewee.Model):
    # Part of the key: an engine that cannot index TEXT gives it a length.
    source = KeyTextField()
    source_id = peewee.BigIntegerField()
    source_created_at = peewee.TextField()

    class Meta:
        table_name = MIGRATED_TABLE
        primary_key = peewee.CompositeKey("source", "source_id")


def _refuse_the_source_itself(source: str, target: str) -> None:
    """The same file by any spelling (path, symlink, hard link, URL) is
    refused before either is opened."""
    source_files = backend_for(source).files()
    if source_files and any(same_file(f, source_files[0]) for f in backend_for(target).files()):
        raise TelemetryValidationError("target", f"{target} is the source itself")


def _open_source(source: Union[str, os.PathLike[str]]) -> Tuple[peewee.Database, str]:
    """The source opened read-only (never written, not even its schema),
    and the name it is known by (a file's absolute path)."""
    where = os.fspath(source)
    if where == ":memory:":
        raise TelemetryValidationError("source", "must be a database file or URL, got ':memory:'")
    backend = backend_for(where)
    database = backend.open_readonly(purpose="copy")
    name = backend.path
    if os.path.isfile(name):
        name = str(Path(name).resolve())
    return database, name


def _convert(
    names: Sequence[str], row: Sequence[Any], labels: Optional[Mapping[str, str]] = None
) -> Tuple[int, Union[Tuple[Any, TelemetryRecord], str]]:
    """(source id, (created_at, record)) or (source id, why the row is
    invalid); ``labels``: the row's, when it has any."""
    values: Dict[str, Any] = dict(zip(names, row, strict=True))
    if labels:
        values["labels"] = labels
    row_id = int(values.pop("id"))
    created = values.pop("created_at")
    try:
        when = (check_instant("created_at", parse_timestamp(created))
                if isinstance(created, str) else None)
    except (ValueError, OverflowError):
        when = None
    if when is None:
        return row_id, f"created_at: not a timestamp in range ({created!r})"
    try:
        return row_id, (when, TelemetryRecord.from_mapping(values))
    except TelemetryValidationError as exc:
        return row_id, str(exc)


def migrate(
    source: Union[str, os.PathLike[str]],
    target: Union[str, os.PathLike[str], PeeweeTelemetryStore],
    *,
    batch_size: int = BATCH_SIZE,
    source_name: Optional[str] = None,
    progress: Optional[Callable[[MigrationProgress], None]] = None,
    logger: Optional[logging.Logger] = None,
) -> MigrationResult:
    """Copy every row of the SQLite file ``source`` into ``target`` (a URL,
    a path, or an open store, which stays open); return what was done.

    ``created_at`` and every column are kept (``id`` is the target's own).
    Rows copied by an earlier run under the same ``source_name`` (by default
    the source's absolute path) are skipped; rows that are not valid records
    are skipped and listed in the result, and a later run tries them again.
    ``progress`` is called after each batch.
    """
    check_count("batch_size", batch_size, 1)
    if source_name is not None and (not isinstance(source_name, str) or not source_name):
        raise TelemetryValidationError(
            "source_name", f"must be a non-empty string, got {source_name!r}"
        )
    log = logger or logging.getLogger(LOGGER_NAME)
    if not isinstance(target, PeeweeTelemetryStore):
        _refuse_the_source_itself(os.fspath(source), os.fspath(target))
    source_db, source_path = _open_source(source)
    try:
        name = source_name if source_name is not None else source_path
        store = (target if isinstance(target, PeeweeTelemetryStore)
                 else create_telemetry_store(os.fspath(target)))
        try:
            return _copy(source_db, source_path, name, store, batch_size, progress, log)
        finally:
            if store is not target:
                store.close()
    finally:
        source_db.close()


def _copy(
    source: peewee.Database,
    source_path: str,
    name: str,
    store: PeeweeTelemetryStore,
    batch_size: int,
    progress: Optional[Callable[[MigrationProgress], None]],
    log: logging.Logger,
) -> MigrationResult:
    started = time.perf_counter()
    reader = _Reader(source, source_path)
    names = reader.names
    total, last_id = reader.extent()
    migrated = tables_of(store.database).side(_Migrated)
    after, done, copied, already = 0, 0, 0, 0
    invalid: List[Tuple[int, str]] = []
    invalid_count = 0
    # Under the migration lock: two runs starting at once on a new
    # PostgreSQL database would otherwise race to create the table.
    with store.copying("migrate"):
        migrated.create_table(safe=True)
    while last_id is not None and after < last_id:
        batch = reader.batch(after, last_id, batch_size)
        if not batch:
            break
        after = int(batch[-1][0])
        labelled = reader.labels([int(row[0]) for row in batch])
        written, skipped, bad = _write_batch(store, migrated, name, names, batch, labelled)
        done += len(batch)
        copied += written
        already += skipped
        invalid_count += len(bad)
        invalid.extend(bad[: INVALID_SHOWN - len(invalid)])
        if progress is not None:
            progress(MigrationProgress(done, total, copied, already + invalid_count))
    result = MigrationResult(
        source=source_path, target=store.path, total=int(total), copied=copied,
        already_copied=already, invalid=tuple(invalid), invalid_count=invalid_count,
        seconds=time.perf_counter() - started,
    )
    log.info("migrate: %s", result.summary().replace("\n", "; "))
    return result


class _Reader:
    """Batches of the source's rows in ``id`` order, ``created_at`` as SQLite
    stores it (UTC text) whatever the source's engine."""

    def __init__(self, database: peewee.Database, path: str) -> None:
        self.database = database
        self.path = path
        tables = tables_of(database)
        self.model = tables.executions
        self.as_text = tables.dialect.as_text
        table = quote(database, TABLE_NAME)
        cursor = self._run(f"SELECT * FROM {table} WHERE 1 = 0", [])
        present = {d[0] for d in cursor.description}
        cursor.close()
        # Columns the source lacks (older versions of the original store)
        # take the record's defaults.
        self.names = ["id", "created_at"] + [f for f in FIELD_NAMES if f in present]
        # The source's labels, when it has any (a store of this version).
        conn = tables.engine.statements(database)
        self.label_sql = (_labels.label_sql(tables.labels)
                          if tables.engine.has_table(conn, LABELS_TABLE) else None)

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        try:
            return self.database.execute_sql(sql, params)
        except peewee.DatabaseError as exc:
            raise DatabaseError(f"{self.path}: cannot be read ({exc})") from exc

    def extent(self) -> Tuple[int, Optional[int]]:
        """(rows, highest id) of the source."""
        m = self.model
        total, last = self._run(
            *render(self.database, m.select(peewee.fn.COUNT(peewee.SQL("*")), peewee.fn.MAX(m.id)))
        ).fetchone()
        return int(total), None if last is None else int(last)

    def labels(self, ids: Sequence[int]) -> Dict[int, Dict[str, str]]:
        """The labels of the source's rows ``ids`` that have any."""
        if self.label_sql is None:
            return {}
        try:
            return _labels.read(tables_of(self.database).engine.statements(self.database),
                                self.label_sql, ids)
        except peewee.DatabaseError as exc:
            raise DatabaseError(f"{self.path}: cannot be read ({exc})") from exc

    def batch(self, after: int, last: int, size: int) -> List[Tuple[Any, ...]]:
        """Up to ``size`` rows with ``after < id <= last``."""
        m = self.model
        columns = [
            self.as_text(m.created_at).alias("created_at") if n == "created_at" else getattr(m, n)
            for n in self.names
        ]
        query = (m.select(*columns).where((m.id > after) & (m.id <= last))
                 .order_by(m.id).limit(size))
        return [tuple(row) for row in self._run(*render(self.database, query)).fetchall()]


#: The columns a copied row is written with: ``created_at`` kept.
COPY_COLUMNS = TIMED_COLUMNS


def _refused(store: PeeweeTelemetryStore, record: TelemetryRecord) -> Optional[str]:
    """Why the target's engine cannot store ``record`` (a NUL character in
    text on PostgreSQL …), or ``None``."""
    try:
        store.checked_row(record)
    except TelemetryValidationError as exc:
        return str(exc)
    return None


def _copy_row(copy: Copy, when: Any, record: TelemetryRecord) -> Tuple[Any, ...]:
    """The parameters of :data:`COPY_COLUMNS` for one copied row."""
    return (copy.stamp(when), *record.as_row())


def _stamp(created_at: Any) -> str:
    """A source ``created_at`` as the tracking table keeps it."""
    try:
        return format_timestamp(parse_timestamp(created_at))
    except (TypeError, ValueError, AttributeError, OverflowError):
        return repr(created_at)


def _write_batch(
    store: PeeweeTelemetryStore,
    migrated: Type[_Migrated],
    name: str,
    names: Sequence[str],
    batch: Sequence[Sequence[Any]],
    labelled: Mapping[int, Mapping[str, str]],
) -> Tuple[int, int, List[Tuple[int, str]]]:
    """Write the rows of ``batch`` not copied before (with their labels in
    ``labelled``, by source id) and mark them copied, in one transaction
    that no other migration runs at the same time.

    Returns (rows written, rows copied before, invalid rows with the reason).
    """
    with store.copying("migrate", labelled=bool(labelled)) as copy:
        query: Any = (
            migrated.select(migrated.source_id, migrated.source_created_at)
            # The batch is a range of ids: one index range scan, no long IN list.
            .where(
                (migrated.source == name)
                & migrated.source_id.between(batch[0][0], batch[-1][0])
            )
            .tuples()
        )
        # Normalised: an earlier version wrote years before 1000 unpadded.
        seen: Dict[int, str] = {int(row_id): _stamp(str(stamp)) for row_id, stamp in query}
        new: List[Tuple[int, Any, TelemetryRecord]] = []
        invalid: List[Tuple[int, str]] = []
        already = 0
        for row in batch:
            row_id = int(row[0])
            if row_id in seen:
                already += 1
                stamp = _stamp(row[1])
                if stamp != seen[row_id]:
                    raise DatabaseError(
                        f"source {name!r}: row id {row_id} was copied before with created_at "
                        f"{seen[row_id]}, but now has {stamp}; this is not the file copied "
                        "before: give it another source name"
                    )
                continue
            converted = _convert(names, row, labelled.get(row_id))[1]
            if not isinstance(converted, str):
                converted = _refused(store, converted[1]) or converted
            if isinstance(converted, str):
                invalid.append((row_id, converted))
            else:
                new.append((row_id, *converted))
        if new:
            plain = [(when, record) for _, when, record in new if not record.labels]
            copy.rows([_copy_row(copy, when, record) for when, record in plain])
            if len(plain) < len(new):  # the rows with labels need their new ids
                copy.labelled([(_copy_row(copy, when, record), record.labels)
                               for _, when, record in new if record.labels])
            copy.copy(MIGRATED_TABLE, ("source", "source_id", "source_created_at"),
                      [(name, row_id, format_timestamp(when)) for row_id, when, _ in new])
    return len(new), already, invalid


# --- import: the same copy path, other readers ----------------------------------

#: How many skipped lines a result lists by place and reason (all are counted).
SKIPPED_SHOWN = 20


@dataclasses.dataclass(frozen=True)
class ImportProgress:
    """Where a running import is, passed to ``progress`` after each batch."""

    files: int
    lines: int
    #: Executions written or looked at so far.
    rows: int


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    format: str
    target: str
    files: int
    lines: int
    #: Executions written as new rows.
    imported: int
    #: Executions whose row (recorded under the same key) was brought up to
    #: date (a transcript that grew).
    updated: int
    #: Executions whose row already held exactly these values.
    unchanged: int
    #: Lines (or files, or rows kept because their new reading was
    #: partial) left out: (where, reason), the first :data:`SKIPPED_SHOWN`.
    skipped: Tuple[Tuple[str, str], ...]
    skipped_count: int
    #: How many were left out for each reason (its text up to any value).
    reasons: Tuple[Tuple[str, int], ...]
    seconds: float

    @property
    def written(self) -> int:
        return self.imported + self.updated

    def summary(self) -> str:
        """A few lines for people: what was read, written and left out (file
        names and reasons shown through :func:`~telemetry_orm.formats.printable`)."""
        lines = [
            f"read {self.lines:,} lines in {self.files:,} files ({self.format}) in "
            f"{self.seconds:.1f} s: {self.imported:,} imported, {self.updated:,} updated, "
            f"{self.unchanged:,} unchanged, {self.skipped_count:,} skipped",
        ]
        lines += [f"  skipped {count:,}: {printable(reason)}" for reason, count in self.reasons]
        lines += [f"  {printable(where)}: {printable(reason)}" for where, reason in self.skipped]
        if self.skipped_count > len(self.skipped):
            lines.append(f"  … and {self.skipped_count - len(self.skipped):,} more")
        return "\n".join(lines)


def import_files(
    fmt: str,
    paths: Sequence[Union[str, os.PathLike[str]]],
    target: Union[str, os.PathLike[str], PeeweeTelemetryStore],
    *,
    batch_size: int = BATCH_SIZE,
    progress: Optional[Callable[[ImportProgress], None]] = None,
    logger: Optional[logging.Logger] = None,
    prices: Optional[PriceTable] = None,
) -> ImportResult:
    """Import ``paths`` (files, or folders searched for them) of ``fmt`` into
    ``target`` (a URL, a path, or an open store, which stays open).

    ``jsonl``, ``csv``: files ``telemetry-orm export`` wrote; every column
    is kept, ``created_at`` included, and each row is recorded under a key
    made of all its columns, so importing the same rows again adds nothing.
    ``claude-code``: Claude Code transcripts, one execution per session and
    model under the key ``claude-code:<sessionId>:<model>``, replaced when
    the transcript grew; a call without ``costUSD`` costs the list price of
    its tokens in ``prices`` (default: :func:`~telemetry_orm.prices.default_prices`),
    0 for a model without a price; a session with a line skipped never
    replaces its stored row (the row is kept and listed). Lines that cannot
    be used are skipped and listed (a byte that is not UTF-8 costs its line
    only); the rest goes in, a batch of ``batch_size`` executions per
    transaction.
    """
    check_count("batch_size", batch_size, 1)
    if fmt not in _imports.IMPORT_FORMATS:
        raise TelemetryValidationError(
            "format", f"must be one of {', '.join(_imports.IMPORT_FORMATS)}, got {fmt!r}")
    log = logger or logging.getLogger(LOGGER_NAME)
    started = time.perf_counter()
    counter = _imports.Counter()
    if fmt == "claude-code":
        items = _imports.read_claude_code(paths, counter, prices=prices)
        replace = True
    else:
        items = _exports.read_export(paths, fmt, counter)
        replace = False
    store = (target if isinstance(target, PeeweeTelemetryStore)
             else create_telemetry_store(os.fspath(target)))
    try:
        totals = _import_items(store, items, replace, batch_size, counter, progress)
    finally:
        if store is not target:
            store.close()
    imported, updated, unchanged, skipped, skipped_count, reasons = totals
    result = ImportResult(
        format=fmt, target=store.path, files=counter.files, lines=counter.lines,
        imported=imported, updated=updated, unchanged=unchanged, skipped=tuple(skipped),
        skipped_count=skipped_count, reasons=tuple(sorted(reasons.items(), key=lambda r: -r[1])),
        seconds=time.perf_counter() - started,
    )
    log.info("import: %s", result.summary().replace("\n", "; "))
    return result


def _import_items(
    store: PeeweeTelemetryStore,
    items: Any,
    replace: bool,
    batch_size: int,
    counter: Any,
    progress: Optional[Callable[[ImportProgress], None]],
) -> Tuple[int, int, int, List[Tuple[str, str]], int, Dict[str, int]]:
    imported = updated = unchanged = skipped_count = 0
    skipped: List[Tuple[str, str]] = []
    reasons: Dict[str, int] = {}

    def skip(where: str, reason: str) -> None:
        nonlocal skipped_count
        skipped_count += 1
        if len(skipped) < SKIPPED_SHOWN:
            skipped.append((where, reason))
        kind = reason.split(" (")[0]
        reasons[kind] = reasons.get(kind, 0) + 1

    batch: List[_imports.Item] = []

    def flush() -> None:
        nonlocal imported, updated, unchanged
        if not batch:
            return
        new, changed, same, bad = _write_keyed_batch(store, batch, replace)
        imported, updated, unchanged = imported + new, updated + changed, unchanged + same
        for where, reason in bad:
            skip(where, reason)
        batch.clear()
        if progress is not None:
            progress(ImportProgress(counter.files, counter.lines,
                                    imported + updated + unchanged))

    for item in items:
        if isinstance(item, _imports.Skipped):
            skip(item.where, item.reason)
            continue
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    flush()
    if progress is not None:
        progress(ImportProgress(counter.files, counter.lines, imported + updated + unchanged))
    return imported, updated, unchanged, skipped, skipped_count, reasons


def _write_keyed_batch(
    store: PeeweeTelemetryStore, batch: Sequence[_imports.Item], replace: bool
) -> Tuple[int, int, int, List[Tuple[str, str]]]:
    """Write ``batch`` in one transaction: each item under its key, as a new
    row (``created_at`` kept) or, with ``replace``, over the row already
    under that key when its values differ (the rollups move with it).
    Returns (new, updated, unchanged, refused items with the reason); an
    item whose key is taken and ``replace`` is false, or whose row was
    purged (the rollups count it as it was), counts as unchanged; a partial
    reading (``item.partial``) that differs from its row is refused, the row
    kept; an item with an unknown key created before keys were forgotten is
    refused (see :mod:`telemetry_orm.keys`)."""
    tables = store.tables
    key_state, model = tables.keys[2], tables.executions
    # The id is the last parameter (as_text may have one of its own, such as
    # PostgreSQL's to_char pattern).
    current_sql, current_params = render(tables.database, model.select(
        tables.dialect.as_text(model.created_at),
        *[getattr(model, name) for name in FIELD_NAMES]).where(model.id == 0))
    fixed = tuple(current_params[:-1])
    new = changed = same = 0
    refused: List[Tuple[str, str]] = []
    labelled = replace or any(item.record.labels for item in batch)
    with store.copying("import", keyed=True, replace=replace, labelled=labelled) as copy:
        conn, sql, label_sql = copy.conn, copy.keyed_sql, copy.label_sql
        forgotten = _keys.forgotten_before(conn, key_state)
        for item in batch:
            reason = _refused(store, item.record)
            if reason is not None:
                refused.append((item.where, reason))
                continue
            params = _copy_row(copy, item.created_at, item.record)
            found = conn.execute(sql.find, (item.key, item.key)).fetchone()
            if found is None:
                reason = _keys.too_old(item.created_at, forgotten)
                if reason is not None:
                    refused.append((item.where, f"key {item.key!r}: {reason}"))
                    continue
                cursor = conn.execute(sql.insert, params)
                row_id = (int(cursor.fetchone()[0]) if sql.returning
                          else int(cursor.lastrowid or 0))
                conn.execute(sql.remember, (item.key, row_id))
                if item.record.labels and label_sql is not None:
                    _labels.write(conn, label_sql, _labels.label_rows([row_id],
                                                                      [item.record.labels]))
                new += 1
                continue
            row_id = int(found[0])
            if replace and found[1] and label_sql is not None:
                stored = conn.execute(current_sql, (*fixed, row_id)).fetchone()
                wanted = (format_timestamp(item.created_at), *item.record.as_row())
                had = _labels.read(conn, label_sql, [row_id]).get(row_id, {})
                if _same_row(stored, wanted) and had == dict(item.record.labels):
                    same += 1
                elif item.partial is not None:
                    refused.append((item.where, item.partial))
                else:
                    with copy.replacing(row_id):
                        conn.execute(sql.update, (*params, row_id))
                        conn.execute(label_sql.delete, (row_id,))
                        _labels.write(conn, label_sql, _labels.label_rows(
                            [row_id], [item.record.labels]))
                    changed += 1
            else:
                same += 1
        copy.wrote(new + changed)
    return new, changed, same, refused


def _same_row(stored: Sequence[Any], wanted: Sequence[Any]) -> bool:
    if stored is None or len(stored) != len(wanted):
        return False
    for have, want in zip(stored, wanted, strict=True):
        if isinstance(want, float) and have is not None:
            if float(have) != want:
                return False
        elif have != want:
            return False
    return True
