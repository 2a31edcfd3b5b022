"""Closing a store (:meth:`~telemetry_orm.store.PeeweeTelemetryStore.close`):
its background recorders first, writing what they hold, then its
connections, once the reads other threads run have ended."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from .. import forking
from ..errors import BackgroundWriteError, TransactionOpenError
from .gate import Gate
from .opening import Opened


def close_store(path: str, opened: Optional[Opened], recorders: Iterable[Any],
                gate: Gate) -> None:
    """Close the store at ``path``: see
    :meth:`~telemetry_orm.store.PeeweeTelemetryStore.close`. ``opened`` is
    ``None`` for a store never opened (a proxy's); ``recorders``: its
    background recorders."""
    failure: Optional[BaseException] = None
    borrowed = opened is not None and opened.backend.borrowed
    open_recorders = [r for r in recorders if not r.closed]
    if open_recorders and opened is not None and borrowed \
            and opened.backend.in_transaction(opened.database):
        # Closing a recorder waits for it to write what it holds, which
        # may wait for the locks this transaction holds: for ever.
        raise TransactionOpenError(
            f"{path}: cannot close the store inside a transaction open on this "
            "thread's connection while a background recorder is open (it writes what "
            "it holds first, and those writes may wait for this transaction); nothing "
            "was closed. Close it after the transaction ends.")
    for recorder in open_recorders:
        try:
            recorder.close()
        except BackgroundWriteError as exc:
            failure = failure or exc
    # Reads that run without the store lock finish first (new ones are
    # refused): closing a connection another thread is using breaks it.
    # Not under the lock: such a read may take the lock itself. On an
    # application's database the store closes none of the connections
    # they use, and one of them may be waiting for a lock this thread's
    # own transaction holds: nothing to wait for.
    gate.close_users(wait=not borrowed)
    gate.close(opened.upkeep.close if opened is not None else lambda: None)
    forking.untrack(gate)
    if opened is not None:
        forking.untrack(opened.upkeep)
    if failure is not None:
        raise failure
