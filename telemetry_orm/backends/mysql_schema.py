"""MySQL's and MariaDB's tables: the column types that differ from SQLite's
(``DATETIME(6)`` in UTC, indexed text as ``VARCHAR(n)`` in a binary
collation that does not pad, 64-bit integers and doubles), InnoDB in
``utf8mb4``, what a row must meet to fit them, the server and table checks,
and the schema version kept in a one-row table."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List, Optional, Sequence, Tuple

import peewee
from peewee import SQL

from .. import sql as _sql
from ..checks import MAX_KEY_LENGTH, MAX_LABEL_VALUE, to_utc
from ..errors import DatabaseError, TelemetryValidationError
from ..record import TEXT_FIELDS, length_check
from ..schema import (
    TABLE_NAME,
    KeyTextField,
    LabelTextField,
    TimeTextField,
    UTCTimestampField,
    check_table,
    parse_timestamp,
)

#: Table holding the schema version (one row), as on PostgreSQL.
VERSION_TABLE = "telemetry_orm_schema"

#: Characters each indexed text column of a record holds. An index entry
#: of utf8mb4 text takes 4 bytes a character and InnoDB's key is at most
#: 3,072 bytes: the rollups' key (an hour, these five columns and a flag)
#: takes 2,452. Longer values are refused (:func:`check_row`), never cut.
TEXT_LENGTHS: Dict[str, int] = {
    "repo": 255, "model": 160, "provider": 64, "event_type": 64, "conclusion": 64}

#: Other indexed text: record keys, the migration's source, and the month
#: sketches' dimension name and value (the longest of a record's).
OTHER_LENGTHS: Dict[str, int] = {
    "key": MAX_KEY_LENGTH, "source": MAX_KEY_LENGTH, "dimension": 32, "zone": 64,
    "value": max(TEXT_LENGTHS.values()),
    # Budgets: a name, a hold's id, a period's start and an alert's threshold.
    "budget": 64, "hold": 36, "period_start": 32, "threshold": 16}

#: A label's name and value, as long as the record's checks let them be (a
#: label rollup's key, with its hour, model and paid, takes under 2,000 bytes).
LABEL_LENGTHS: Dict[str, int] = {"name": 64, "value": MAX_LABEL_VALUE}

#: Bytes of an unindexed ``TEXT`` column.
UNINDEXED_TEXT = 65_535

#: The rollups' instants, kept as ``DATETIME(6)`` (other instants kept as
#: text stay text: they are read back as such).
TIME_COLUMNS = frozenset({"hour", "day", "month"})

#: InnoDB, utf8mb4, and a binary collation: text compares and groups as on
#: SQLite (the server's default collation ignores case).
TABLE_SETTINGS = ["ENGINE=InnoDB", "DEFAULT CHARSET=utf8mb4", "COLLATE=utf8mb4_bin"]


class UTCDateTimeField(peewee.Field):
    """A ``DATETIME(6)`` holding UTC, read as an aware UTC datetime. Accepts
    an aware datetime, a naive one meaning UTC, or the text SQLite stores."""

    field_type = "DATETIME(6)"

    def db_value(self, value: Any) -> Any:
        if isinstance(value, str):
            value = parse_timestamp(value)
        if isinstance(value, _dt.datetime):
            return to_utc(value).replace(tzinfo=None)
        return value

    def python_value(self, value: Any) -> Any:
        if isinstance(value, _dt.datetime):
            return value.replace(tzinfo=_dt.timezone.utc)
        return value


def no_pad_collation(database: Any) -> str:
    """The binary utf8mb4 collation of the server that does not pad: text
    compares as on SQLite (``'k'`` and ``'k '`` are two keys, two groups).
    Known once the database has connected (the set-up does, before any DDL)."""
    version = getattr(database, "server_version", None) or (0,)
    if version >= (10,):  # MariaDB (MySQL has no 10.x)
        return "utf8mb4_nopad_bin"
    return "utf8mb4_0900_bin" if version >= (8, 0, 17) else "utf8mb4_bin"


class _NoPad:
    """A text column in :func:`no_pad_collation`, chosen when its DDL is made."""

    @property
    def collation(self) -> Optional[str]:
        model = getattr(self, "model", None)
        return None if model is None else no_pad_collation(model._meta.database)

    @collation.setter
    def collation(self, value: Optional[str]) -> None:
        pass  # peewee sets None at creation


class VarChar(_NoPad, peewee.CharField):
    """``VARCHAR(n)`` in the no-pad binary collation."""


class Text(_NoPad, peewee.TextField):
    """``TEXT`` in the no-pad binary collation."""


def column(field: peewee.Field) -> Optional[peewee.Field]:
    """The MySQL column in place of a telemetry table's ``field`` (see
    ``Backend.column``), or ``None`` to keep it."""
    kept = {"null": field.null, "default": field.default, "constraints": field.constraints}
    name = field.name
    if isinstance(field, UTCTimestampField):
        # UTC_TIMESTAMP, not NOW(): right whatever the session's time zone.
        return UTCDateTimeField(constraints=[SQL("DEFAULT (UTC_TIMESTAMP(6))")])
    if isinstance(field, TimeTextField):
        return UTCDateTimeField(null=field.null) if name in TIME_COLUMNS else None
    if isinstance(field, peewee.AutoField):
        return peewee.BigAutoField()
    if isinstance(field, LabelTextField):
        return VarChar(max_length=LABEL_LENGTHS[name], **kept)
    if isinstance(field, peewee.TextField):
        length = TEXT_LENGTHS.get(name) or (
            OTHER_LENGTHS.get(name) if isinstance(field, KeyTextField) else None)
        return VarChar(max_length=length, **kept) if length else Text(**kept)
    if type(field) is peewee.IntegerField:  # INT is 32-bit here, SQLite's 64
        return peewee.BigIntegerField(**kept)
    if type(field) is peewee.FloatField:  # FLOAT is single precision here
        return peewee.DoubleField(**kept)
    return None


_check_lengths = length_check(TEXT_LENGTHS, "MySQL/MariaDB")
_UNINDEXED = tuple((index, name) for index, name in TEXT_FIELDS if name not in TEXT_LENGTHS)


def check_row(row: Sequence[Any]) -> None:
    """Refuse text longer than its column holds (an indexed ``VARCHAR`` in
    characters, a ``TEXT`` in bytes), naming the field: MySQL would cut it
    or fail."""
    _check_lengths(row)
    for index, name in _UNINDEXED:
        value = row[index]
        if value is not None and len(value) * 4 > UNINDEXED_TEXT:
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > UNINDEXED_TEXT:
                raise TelemetryValidationError(
                    name, f"must be at most {UNINDEXED_TEXT:,} bytes of UTF-8 on "
                    f"MySQL/MariaDB (a TEXT column), got {size:,}")


def check_server(path: str, database: peewee.Database) -> None:
    """Refuse a server the store cannot keep its promises on: no InnoDB
    (no transactions), or too old to default a column to ``UTC_TIMESTAMP``."""
    version, = database.execute_sql("SELECT VERSION()").fetchone()
    numbers = tuple(int(p) for p in str(version).split("-")[0].split(".")[:3])
    mariadb = "mariadb" in str(version).lower()
    if numbers < ((10, 2, 1) if mariadb else (8, 0, 13)):
        raise DatabaseError(
            f"{path}: {'MariaDB' if mariadb else 'MySQL'} {version} cannot keep created_at in "
            "UTC by itself (a column default of UTC_TIMESTAMP needs MariaDB >= 10.2.1 or MySQL "
            ">= 8.0.13); upgrade the server")
    row = database.execute_sql(
        "SELECT support FROM information_schema.engines WHERE engine = 'InnoDB'").fetchone()
    if row is None or str(row[0]).upper() not in ("YES", "DEFAULT"):
        raise DatabaseError(
            f"{path}: the server has no InnoDB storage engine; the store needs it for "
            "transactions and row locks (every table is created with ENGINE=InnoDB)")


def check_engine(path: str, database: peewee.Database) -> None:
    """The telemetry table must be InnoDB (one made by hand may not be)."""
    row = database.execute_sql(
        "SELECT engine FROM information_schema.tables WHERE table_schema = DATABASE() "
        "AND table_name = %s", (TABLE_NAME,)).fetchone()
    if row is not None and str(row[0]).lower() != "innodb":
        raise DatabaseError(
            f"{path}: the '{TABLE_NAME}' table uses the {row[0]} storage engine; the store "
            f"needs InnoDB (ALTER TABLE {TABLE_NAME} ENGINE=InnoDB)")


def table_columns(database: peewee.Database) -> List[str]:
    """The columns of ``executions`` in the connection's database."""
    cursor = database.execute_sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
        "AND table_name = %s ORDER BY ordinal_position", (TABLE_NAME,))
    return [str(name) for (name,) in cursor.fetchall()]


def schema_version(database: peewee.Database) -> int:
    """The schema version recorded in the database (0: none)."""
    return _state(database)[0]


def _state(database: peewee.Database) -> Tuple[int, List[str]]:
    version = 0
    (exists,) = database.execute_sql(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
        "AND table_name = %s", (VERSION_TABLE,)).fetchone()
    if exists:
        row = database.execute_sql(
            f"SELECT MAX(version) FROM {_sql.quote(database, VERSION_TABLE)}").fetchone()
        version = int(row[0] or 0)
    return version, table_columns(database)


def check(path: str, database: peewee.Database, purpose: str) -> Tuple[int, List[str]]:
    """The schema version and columns, checked for ``purpose``."""
    version, columns = _state(database)
    row = database.execute_sql(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = DATABASE() "
        "AND table_name = %s", (TABLE_NAME,)).fetchone()
    check_table(path, version, columns, purpose=purpose,
                is_table=row is None or row[0] == "BASE TABLE")
    return version, columns


def write_version(database: peewee.Database, version: int) -> None:
    """Record ``version`` as the schema's."""
    table = _sql.quote(database, VERSION_TABLE)
    database.execute_sql(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL) "
                         "ENGINE=InnoDB")
    database.execute_sql(f"DELETE FROM {table}")
    database.execute_sql(f"INSERT INTO {table} (version) VALUES (%s)", (version,))
