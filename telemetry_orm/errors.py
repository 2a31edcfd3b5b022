"""The exceptions telemetry_orm raises: a small tree under :class:`TelemetryError`."""

from __future__ import annotations

from typing import Any, List, Optional


class TelemetryError(Exception):
    """Base class of every error raised by telemetry_orm."""


class TelemetryValidationError(TelemetryError, ValueError):
    """A record, a mapping or an argument is not acceptable.

    ``field`` names the offending field or argument (``None`` when the problem
    is not tied to one field); ``index`` is the position of the entry in a
    batch, when the error comes from one.
    """

    def __init__(
        self, field: Optional[str], message: str, *, index: Optional[int] = None
    ) -> None:
        self.field = field
        self.index = index
        self.reason = message
        where = f"{field}: " if field else ""
        if index is not None:
            where = f"entry {index}: {where}"
        super().__init__(f"{where}{message}")

    def at_index(self, index: int) -> TelemetryValidationError:
        """Return a copy of this error that also names a batch position."""
        return TelemetryValidationError(self.field, self.reason, index=index)


class StoreClosedError(TelemetryError):
    """The store was closed; open a new one with ``create_telemetry_store``."""


class StoreBusyError(TelemetryError):
    """Another connection held the write lock longer than the busy timeout.

    Nothing was written; the call may be retried once the lock is gone.
    """


class DatabaseError(TelemetryError):
    """The database cannot be used: wrong kind of file, foreign table, newer
    schema, unreadable or read-only location. The file is left untouched."""


class TransactionOpenError(TelemetryError):
    """Work that commits in steps of its own (a purge, a rollup, creating the
    tables) was asked for inside a transaction open on the calling thread's
    connection; nothing was done. Call it outside the transaction."""


class BackgroundWriteError(TelemetryError):
    """A background recorder could not write some records, even after retries.

    ``records`` are those records, in the order they were recorded; nothing
    else holds them any more, so pass them to ``store.record_many`` to try
    again (with ``keys=error.keys``: the key each was given, or ``None``) or
    keep them elsewhere. The last error met is the ``__cause__``.
    """

    def __init__(self, message: str, records: List[Any],
                 keys: Optional[List[Optional[str]]] = None) -> None:
        # Typed loosely: naming TelemetryRecord here would tie the error
        # tree to the records (which raise these errors).
        self.records = records
        self.keys: List[Optional[str]] = keys if keys is not None else [None] * len(records)
        super().__init__(message)


class UnknownBudgetError(TelemetryValidationError):
    """No budget of that name is stored (``store.set_budget`` makes one)."""

    def __init__(self, name: str) -> None:
        super().__init__("budget", f"no budget named {name!r} (see store.budgets() or "
                                   "'telemetry-orm budget list')")
        self.budget = name


class BudgetExceededError(TelemetryError):
    """A reservation would take a budget past its limit: what was spent in
    its period, what live holds keep, and the estimate asked for add up to
    more than ``limit_usd``. Nothing was held."""

    def __init__(self, budget: str, *, spent_usd: float, held_usd: float, limit_usd: float,
                 estimate_usd: float) -> None:
        self.budget = budget
        self.spent_usd = spent_usd
        self.held_usd = held_usd
        self.limit_usd = limit_usd
        self.estimate_usd = estimate_usd
        super().__init__(
            f"budget {budget!r} exceeded: spent ${spent_usd:.6f} + held ${held_usd:.6f} + "
            f"estimate ${estimate_usd:.6f} would pass the limit of ${limit_usd:.6f}")
