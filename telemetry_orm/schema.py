"""The ``executions`` table: its peewee model, its indexes and its versions.

The table is the original store's table, column for column, so a database
written by either opens in the other. ``PRAGMA user_version`` records the
schema version: the original table is version 1.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Callable, Optional, Sequence, Tuple, Type, TypeVar, overload

from peewee import (
    SQL,
    BigIntegerField,
    CompositeKey,
    Database,
    Entity,
    Field,
    FloatField,
    Index,
    IntegerField,
    Model,
    Table,
    TextField,
)
from playhouse.sqlite_ext import AutoIncrementField

from .checks import to_utc
from .errors import DatabaseError
from .record import FIELD_NAMES
from .sql import quote

TABLE_NAME = "executions"

#: Names of the two indexes the original store creates.
INDEX_NAMES = ("idx_executions_created_at", "idx_executions_repo")

#: Columns without which a table called ``executions`` is not ours.
CORE_COLUMNS = ("id", "created_at", "repo", "event_type", "model", "conclusion")

#: Every column, in table order.
COLUMN_NAMES = ("id", "created_at") + FIELD_NAMES

# A year of one to three digits at the start: written unpadded by an
# earlier version (strftime's %Y), read as the year it meant.
_SHORT_YEAR = re.compile(r"\d{1,3}-")


def format_timestamp(value: _dt.datetime) -> str:
    """Render a datetime as the table stores it: UTC ``YYYY-MM-DD HH:MM:SS``.

    A naive datetime is taken to be UTC already; an aware one is converted.
    The year always has four digits (``strftime("%Y")`` writes ``657``),
    so that the text sorts as the time does.
    """
    return to_utc(value).replace(tzinfo=None, microsecond=0).isoformat(" ")


def parse_timestamp(value: str) -> _dt.datetime:
    """Parse a stored ``created_at`` into an aware UTC datetime."""
    short = _SHORT_YEAR.match(value)
    if short:
        value = value.zfill(len(value) + 5 - short.end())
    return to_utc(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))


M = TypeVar("M", bound=Model)


class UTCTimestampField(Field):
    """A UTC timestamp kept as ``TEXT`` in SQLite's ``datetime('now')`` format.

    Python gets aware UTC datetimes; datetimes written or compared are turned
    into the same text first, so comparisons in SQL stay correct whatever the
    local time zone.
    """

    field_type = "TEXT"

    def db_value(self, value: Any) -> Any:
        if isinstance(value, _dt.datetime):
            return format_timestamp(value)
        return value

    def python_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return parse_timestamp(value)
        return value


class KeyTextField(TextField):
    """Text that is indexed or part of a key (``executions.repo``, a record
    key, the rollups' dimensions): ``TEXT`` as declared here. An engine
    that cannot index ``TEXT`` (MySQL) gives these columns a length through
    its backend's ``column`` (see :func:`with_columns`)."""


class TimeTextField(TextField):
    """A UTC instant kept as text, as ``created_at`` is on SQLite
    (``YYYY-MM-DD HH:MM:SS``): the rollups' hours, days and months, and the
    keys' purge stamps. ``TEXT`` as declared here; an engine may keep them
    in a type of its own (its backend's ``column``)."""


#: What an engine declares in place of a field of a telemetry table (see
#: ``Backend.column``): the new field, or ``None`` to keep it.
ColumnChoice = Callable[[Field], Optional[Field]]


def in_place_of(field: Field, original: Field) -> Field:
    """``field`` given the place of ``original`` in its table: peewee orders
    columns by field creation, so a field redefined in a subclass would
    otherwise move to the end of the table."""
    new: Any = field
    new._order = getattr(original, "_order")  # noqa: B009 - private to peewee
    new._sort_key = getattr(original, "_sort_key")  # noqa: B009
    return field


def with_columns(base: Type[M], column: ColumnChoice) -> Type[M]:
    """``base`` with each field for which ``column`` names another field
    replaced by it, in its place, in the same table (``base`` itself when
    none is), keeping its part in the table (primary key, ``NULL`` or not,
    unique, indexed). The engine's table is then no longer SQLite's ``WITHOUT
    ROWID`` layout; indexes, keys and the rest are inherited::

        >>> from peewee import CharField
        >>> wide = with_columns(Execution, lambda f: CharField(max_length=190)
        ...                     if isinstance(f, KeyTextField) else None)
        >>> wide.repo.field_type, wide.repo.max_length, wide.model.field_type
        ('VARCHAR', 190, 'TEXT')
    """
    fields = {}
    for name, field in base._meta.fields.items():
        new = column(field)
        if new is not None:
            # The column's part in its table stays the table's: the engine
            # picks its type (and defaults), not whether it is a key.
            for part in ("primary_key", "null", "unique", "index"):
                setattr(new, part, getattr(field, part))
            fields[name] = in_place_of(new, field)
    if not fields:
        return base
    meta = type("Meta", (), {"table_name": base._meta.table_name})
    made: Type[M] = type(base.__name__, (base,), {**fields, "Meta": meta,
                                                  "__module__": base.__module__})
    return made


def _default(sql: str) -> Any:
    return SQL(f"DEFAULT {sql}")


_table = Table(TABLE_NAME)


class Execution(Model):
    """One row of ``executions``: an agent run.

    Unbound here; :func:`telemetry_orm.create_telemetry_store` gives each store
    its own subclass bound to its own database (``store.model``), so stores in
    one process never share a binding.
    """

    id = AutoIncrementField(null=True)
    created_at = UTCTimestampField(constraints=[_default("(datetime('now'))")])
    delivery_id = TextField(null=True)
    repo = KeyTextField()
    pr_number = IntegerField(null=True)
    event_type = TextField()
    provider = TextField(default="anthropic", constraints=[_default("'anthropic'")])
    model = TextField()
    input_tokens = IntegerField(default=0, constraints=[_default("0")])
    output_tokens = IntegerField(default=0, constraints=[_default("0")])
    cache_read_tokens = IntegerField(default=0, constraints=[_default("0")])
    cache_creation_tokens = IntegerField(default=0, constraints=[_default("0")])
    duration_ms = IntegerField(default=0, constraints=[_default("0")])
    cost_usd = FloatField(default=0.0, constraints=[_default("0")])
    conclusion = TextField()
    session_id = TextField(null=True)
    num_turns = IntegerField(null=True)
    stop_reason = TextField(null=True)

    class Meta:
        table_name = TABLE_NAME
        # Named as the original store names them (peewee would otherwise
        # derive names from the class name, and differ per subclass).
        indexes = (
            Index(INDEX_NAMES[0], _table, (Entity("created_at"),), safe=True),
            Index(INDEX_NAMES[1], _table, (Entity("repo"),), safe=True),
        )


#: The table of record keys, beside ``executions`` (which stays the original's).
KEYS_TABLE = "telemetry_orm_keys"


class ExecutionKey(Model):
    """A key under which a row of ``executions`` was recorded
    (``store.record(entry, key=…)``): at most one row per key. Created when
    a store first records with a key. This is the PostgreSQL layout (the row
    id its primary key, the key unique). A key whose row is gone still
    holds its key (see :mod:`telemetry_orm.keys`)."""

    execution_id = IntegerField(primary_key=True)
    key = KeyTextField()

    class Meta:
        table_name = KEYS_TABLE
        indexes = (
            Index("idx_telemetry_orm_keys_key", Table(KEYS_TABLE), (Entity("key"),),
                  unique=True, safe=True),
        )


class SqliteExecutionKey(Model):
    """The same keys on SQLite: one b-tree ordered by key (``WITHOUT
    ROWID``), so a keyed write adds one b-tree to the row's, not two. With
    no index by row id, the keys of a purge's rows are found by the sweep
    that follows it. Files made with the PostgreSQL layout work the same."""

    key = KeyTextField(primary_key=True)
    execution_id = IntegerField()

    class Meta:
        table_name = KEYS_TABLE
        without_rowid = True


#: The labels of executions (``TelemetryRecord(labels=…)``).
LABELS_TABLE = "telemetry_orm_labels"


class LabelTextField(KeyTextField):
    """A label's name or value: indexed text whose most characters the
    record's checks fix (an engine that cannot index ``TEXT`` gives the
    column that length)."""


class ExecutionLabel(Model):
    """A label of a row of ``executions``: one row per label, written in the
    row's own transaction and gone with the row. Created at the first
    labelled write. Keyed by row and name (a row's labels side by side,
    after the rows before it), with no other index: reports and budgets
    read a label from the execution, and an index by name and value, whose
    entries land all over its tree, measured as a third of the cost of a
    labelled ``record()``. No foreign key: the original TypeScript store
    deletes rows without knowing this table, and ids are never given out
    twice."""

    execution_id = BigIntegerField()
    name = LabelTextField()
    value = LabelTextField()

    class Meta:
        table_name = LABELS_TABLE
        primary_key = CompositeKey("execution_id", "name")


class SqliteExecutionLabel(ExecutionLabel):
    """The same labels on SQLite: one b-tree by row and name (``WITHOUT ROWID``)."""

    class Meta:
        table_name = LABELS_TABLE
        without_rowid = True


#: Keys whose row is gone (tombstones), beside the keys of rows still there.
PURGED_KEYS_TABLE = "telemetry_orm_purged_keys"

#: Until when purged keys were forgotten (one row).
KEY_STATE_TABLE = "telemetry_orm_key_state"


class PurgedKey(Model):
    """The key of a row that is gone (a purge's, or one deleted otherwise),
    kept so that the same execution sent again is not counted twice (the
    rollups still count it): moved here from the keys table by a purge,
    stamped with that purge's time (UTC text), and forgotten once the stamp
    is older than the purge's ``key_days`` (see :mod:`telemetry_orm.keys`)."""

    key = KeyTextField(primary_key=True)
    execution_id = BigIntegerField()
    purged_at = TimeTextField()

    class Meta:
        table_name = PURGED_KEYS_TABLE
        indexes = (
            Index("idx_telemetry_orm_purged_keys_purged_at", Table(PURGED_KEYS_TABLE),
                  (Entity("purged_at"),), safe=True),
        )


class KeyState(Model):
    """One row: purged keys stamped before ``forgotten_before`` (UTC text)
    may have been forgotten, so a keyed row created before it cannot be
    checked for duplicates."""

    id = IntegerField(primary_key=True)
    forgotten_before = TimeTextField(null=True)

    class Meta:
        table_name = KEY_STATE_TABLE


@overload
def bind_model(database: Database) -> Type[Execution]: ...
@overload
def bind_model(database: Database, base: Type[M]) -> Type[M]: ...


def bind_model(database: Database, base: Optional[Type[Model]] = None) -> Type[Model]:
    """Return a subclass of ``base`` (default ``Execution``) bound to ``database`` alone.

    Binding in peewee is class-wide, so each store gets a class of its own;
    the original ``Execution`` and every other store stay untouched::

        >>> import peewee
        >>> db = peewee.SqliteDatabase(":memory:")
        >>> model = bind_model(db)
        >>> db.create_tables([model])
        >>> model._meta.table_name, Execution._meta.database is None
        ('executions', True)
    """
    base = base or Execution
    # table_name is not inherited by subclasses (indexes and database are).
    table = TABLE_NAME if issubclass(base, Execution) else base._meta.table_name
    # Nor are without_rowid and temporary.
    meta = type("Meta", (), {"database": database, "table_name": table,
                             "without_rowid": base._meta.without_rowid,
                             "temporary": base._meta.temporary})
    return type(base.__name__.lstrip("_"), (base,), {"Meta": meta, "__module__": base.__module__})


# --- Schema history ----------------------------------------------------------
#
# Version N means the first N steps below have run. Each step is small, named,
# and safe to run on any database older than its version; the backend runs the
# pending ones in one write transaction and then records the new version.


def _column_ddl(database: Database, field: Field) -> str:
    sql: str = database.get_sql_context().sql(field.ddl(database.get_sql_context())).query()[0]
    return sql


def m001_original_table(
    database: Database, model: Type[Execution], columns: Sequence[str]
) -> None:
    """Version 1, the original store's table and its two indexes.

    Creates them on a new database. On a table made before some columns
    existed (the cache token columns, ``session_id``, ``num_turns``,
    ``stop_reason`` …) adds each missing column with its original type and
    default, keeping every row. A complete table is left exactly as it is.
    """
    if not columns:
        model.create_table(safe=True)
        return
    table = quote(database, TABLE_NAME)
    for field in model._meta.sorted_fields:
        if field.column_name not in columns:
            database.execute_sql(f"ALTER TABLE {table} ADD COLUMN {_column_ddl(database, field)}")
    model._schema.create_indexes(safe=True)  # type: ignore[attr-defined]


MIGRATIONS: Tuple[Callable[[Database, Type[Execution], Sequence[str]], None], ...] = (
    m001_original_table,
)

#: The schema version this package writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)


def check_table(
    where: str, version: int, columns: Sequence[str], *, purpose: str = "write",
    is_table: bool = True,
) -> None:
    """Refuse a database that is not a telemetry database this package can
    use for ``purpose``; the one place that decides it.

    ``version`` is the schema version the database records (0: none) and
    ``columns`` those of its ``executions`` table (empty: no such table);
    ``is_table`` is false when ``executions`` is a view (never ours).

    On every purpose a newer schema version is refused: what it means is
    not known to this version. With no telemetry table beside it, the
    version is another program's, and the message says so.

    - ``"write"`` (a store): a newer schema version, a recorded version but
      no table (another application's database), a table without the core
      columns, or a current version with columns missing (changed by hand).
      A table of an older version is fine: the store upgrades it.
    - ``"read"`` (reports, exports): no table at all, a table that is not a
      telemetry table, or one that predates some columns.
    - ``"copy"`` (the source of a copy): a table with the core columns;
      columns it predates take the record's defaults.
    """
    missing_core = [c for c in CORE_COLUMNS if c not in columns]
    missing = [c for c in COLUMN_NAMES if c not in columns]
    if not columns and purpose == "write" and version:
        raise DatabaseError(
            f"{where}: schema version {version} is recorded but there is no "
            f"'{TABLE_NAME}' table: this looks like another application's database"
        )
    if version > SCHEMA_VERSION and (not columns or not is_table or missing_core):
        # Only a database with our table can have a newer version of ours.
        raise DatabaseError(
            f"{where}: schema version {version} is another program's, not telemetry_orm's: "
            f"there is no telemetry '{TABLE_NAME}' table, so this is not a telemetry "
            "database (nothing was changed); give the path of a telemetry database"
        )
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"{where}: schema version {version} is newer than this telemetry_orm "
            f"understands ({SCHEMA_VERSION}); upgrade telemetry_orm to use this database"
        )
    if not columns:
        if purpose != "write":
            raise DatabaseError(f"{where}: has no '{TABLE_NAME}' table; not a telemetry database")
        return
    if not is_table:
        raise DatabaseError(
            f"{where}: '{TABLE_NAME}' is a view, not a telemetry table; nothing was changed"
        )
    if missing_core:
        raise DatabaseError(
            f"{where}: has an '{TABLE_NAME}' table that is not a telemetry table "
            f"(missing columns: {', '.join(missing if purpose == 'read' else missing_core)})"
        )
    if not missing or purpose == "copy":
        return
    if purpose == "read":
        raise DatabaseError(
            f"{where}: the '{TABLE_NAME}' table predates columns {', '.join(missing)}; "
            "open it once with create_telemetry_store() to upgrade it"
        )
    if version == SCHEMA_VERSION:
        raise DatabaseError(
            f"{where}: schema version {version} but the '{TABLE_NAME}' table lacks "
            f"columns {', '.join(missing)}; it was changed by hand"
        )


def is_current(version: int, columns: Sequence[str]) -> bool:
    """Whether a database at ``version`` with ``columns`` needs no upgrade."""
    return version == SCHEMA_VERSION and all(c in columns for c in COLUMN_NAMES)
