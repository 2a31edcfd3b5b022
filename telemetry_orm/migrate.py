"""``migrate``: copy the executions of a SQLite file (also one written by the
original TypeScript store) into another store, usually PostgreSQL.

The public entry point of the copy path in :mod:`telemetry_orm.transfer`::

    >>> from telemetry_orm.migrate import migrate
    >>> result = migrate("telemetry.db", "postgresql://bot:secret@db/telemetry")  # doctest: +SKIP
    >>> print(result.summary())                                                    # doctest: +SKIP
"""

from .transfer import BATCH_SIZE, MIGRATED_TABLE, MigrationProgress, MigrationResult, migrate

__all__ = ["BATCH_SIZE", "MIGRATED_TABLE", "MigrationProgress", "MigrationResult", "migrate"]
