"""The SQLite backend (telemetry_orm.backends.sqlite, its log upkeep in
sqlite_wal and sqlite_checkpoint, its purges in sqlite_purge): how a purge
paces its chunks (the gaps it leaves other writers, the size of its
chunks, the connection settings it restores),
checkpoints, read-only opening, and the keys table with its sweep."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from pathlib import Path
from typing import Any, Iterator, List, Set

import pytest
from support import FIXED_NOW, minimal

from telemetry_orm import (
    PeeweeTelemetryStore,
    PurgeProgress,
    StoreBusyError,
    create_telemetry_store,
    folding,
)
from telemetry_orm.backends import sqlite_purge, sqlite_wal
from telemetry_orm.backends.base import PURGE_CHUNK
from telemetry_orm.backends.sqlite_checkpoint import checkpoint
from telemetry_orm.backends.sqlite_purge import (
    FOLD_BUSY_HOLD,
    FOLD_BUSY_LEAST,
    FOLD_BUSY_START,
    PURGE_BUSY_MEMORY,
    PURGE_CACHE_KIB,
    PURGE_CHUNK_MAX,
    PURGE_CHUNK_MIN,
    PURGE_FOLD_CHUNK,
    PURGE_HOLD,
    PURGE_QUIET_SPAN,
    PURGE_WALK_DENSITY,
    IdWalk,
    SqlitePurgePacer,
    retry_gap,
)

# The sleeps of SQLite's default busy handler (sqliteDefaultBusyCallback in
# main.c), in ms: a writer that finds the lock taken retries after each.
#: "Now" for rows placed by age; the stores' clock is pinned there, so a row
#: a minute from the purge's cutoff stays a minute from it however long the
#: test takes.
NOW = FIXED_NOW.strftime("%Y-%m-%d %H:%M:%S")
pytestmark = pytest.mark.usefixtures("pinned_clock")

SLEEPS_MS = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100]


def next_retry_ms(waited_ms: float) -> float:
    """When, counted from its first attempt, a writer that has waited
    ``waited_ms`` tries next."""
    at = 0.0
    for sleep in SLEEPS_MS:
        at += sleep
        if at > waited_ms:
            return at
    while at <= waited_ms:
        at += SLEEPS_MS[-1]
    return at


@pytest.mark.parametrize("waited_ms", [0.5, 1, 2, 7.9, 8, 17, 18.5, 25, 33, 40, 52,
                                       60, 100, 127, 130, 177, 300, 500, 1234])
def test_a_gap_of_retry_gap_catches_every_writer_that_waited_so_long(waited_ms: float) -> None:
    gap_ms = retry_gap(waited_ms / 1000) * 1000
    # Any writer that has waited w <= waited_ms when the lock comes free
    # tries again within the gap.
    for tenth in range(1, int(waited_ms * 10) + 1):
        w = tenth / 10
        assert next_retry_ms(w) - w <= gap_ms + 1e-9, (w, gap_ms)
    # ... and the gap is no longer than the longest sleep such a writer can
    # be in.
    longest = max(next_retry_ms(t / 10) - t / 10 for t in range(0, int(waited_ms * 10) + 1))
    assert gap_ms <= longest + 1e-9


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def conns(tmp_path: Path) -> Iterator[List[sqlite3.Connection]]:
    """The purging connection and another one, on one WAL file."""
    path = tmp_path / "pace.db"
    create_telemetry_store(path).close()
    opened = [sqlite3.connect(path, isolation_level=None) for _ in range(2)]
    yield opened
    for conn in opened:
        conn.close()


def other_writes(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO executions (repo, event_type, model, conclusion)"
                 " VALUES ('other/writer', 'push', 'm', 'success')")


def test_pacer_in_a_quiet_database_leaves_a_gap_once_a_span(
        conns: List[sqlite3.Connection]) -> None:
    purging, _ = conns
    clock = FakeClock()
    pacer = SqlitePurgePacer(clock=clock)
    pacer.start(purging)
    held = 0.020
    free_since = clock.now
    pauses = []
    for _ in range(40):
        clock.now += held
        pause = pacer.after_chunk(purging, held)
        pauses.append(pause)
        if pause:
            waited = clock.now - free_since
            # Long enough for any writer that came during those chunks ...
            assert pause >= retry_gap(waited)
            # ... which never wait much beyond the quiet span.
            assert waited <= PURGE_QUIET_SPAN + held
            clock.now += pause
            free_since = clock.now
    gaps = [p for p in pauses if p]
    assert 0 < len(gaps) < len(pauses) / 3, pauses


def test_pacer_counts_reading_before_a_step_as_a_gap_when_it_is_as_long(
        conns: List[sqlite3.Connection]) -> None:
    purging, other = conns
    clock = FakeClock()
    pacer = SqlitePurgePacer(clock=clock)
    pacer.start(purging)
    assert pacer.quiet
    held = 0.015
    # Steps that read 20 ms with the lock free before each 15 ms hold: a
    # writer that began waiting at any moment retries while it is free.
    for _ in range(40):
        clock.now += 0.020 + held
        assert pacer.after_chunk(purging, held, free=0.020) == 0.0
    # Reads too short to cover a waiting writer's retries leave the gaps
    # where they were.
    pauses = []
    for _ in range(40):
        clock.now += 0.001 + held
        pauses.append(pacer.after_chunk(purging, held, free=0.001))
        clock.now += pauses[-1]
    assert 0 < len([p for p in pauses if p]) < len(pauses) / 3, pauses
    # While another connection writes, steps read under the lock.
    other_writes(other)
    clock.now += held
    pacer.after_chunk(purging, held)
    assert not pacer.quiet
    clock.now += PURGE_BUSY_MEMORY
    assert pacer.quiet


def test_pacer_leaves_a_gap_after_every_chunk_while_others_write(
        conns: List[sqlite3.Connection]) -> None:
    purging, other = conns
    clock = FakeClock()
    pacer = SqlitePurgePacer(clock=clock)
    pacer.start(purging)
    held = 0.030
    clock.now += held
    assert pacer.after_chunk(purging, held) == 0.0  # nobody else yet
    other_writes(other)
    clock.now += held
    seen = clock.now  # the first chunk after the other write notices it
    pause = pacer.after_chunk(purging, held)
    chunks_while_busy = 0
    while clock.now < seen + PURGE_BUSY_MEMORY:
        assert pause >= retry_gap(held), (clock.now, pause)
        chunks_while_busy += 1
        clock.now += pause + held
        pause = pacer.after_chunk(purging, held)
    assert chunks_while_busy >= 10
    # Quiet again once the other writer has been silent long enough: chunks
    # follow each other without a gap until the quiet span is over.
    clock.now += pause
    later = []
    for _ in range(8):
        clock.now += held
        later.append(pacer.after_chunk(purging, held))
        clock.now += later[-1]
    assert later.count(0.0) >= 5 and any(later), later


def test_pacer_sizes_chunks_to_hold_the_lock_about_the_target(
        conns: List[sqlite3.Connection]) -> None:
    purging, _ = conns
    pacer = SqlitePurgePacer(clock=FakeClock())
    pacer.start(purging)
    per_row = 2e-6  # seconds per deleted row
    sizes = [pacer.rows]
    for _ in range(12):
        before = pacer.rows
        pacer.after_chunk(purging, before * per_row)
        # Never more than double or half at once.
        assert before / 2 <= pacer.rows <= before * 2
        sizes.append(pacer.rows)
    assert sizes[0] == PURGE_CHUNK
    assert pacer.rows == pytest.approx(PURGE_HOLD / per_row, rel=0.01)
    # Bounded both ways.
    for _ in range(20):
        pacer.after_chunk(purging, 10.0)
    assert pacer.rows == PURGE_CHUNK_MIN
    for _ in range(20):
        pacer.after_chunk(purging, 1e-6)
    assert pacer.rows == PURGE_CHUNK_MAX


def test_pacer_sizes_a_folds_steps_to_their_hold_only_while_others_write(
        conns: List[sqlite3.Connection]) -> None:
    purging, other = conns
    clock = FakeClock()
    pacer = SqlitePurgePacer(clock=clock)
    pacer.start(purging)
    most = 2_000
    # Nobody else writes: every step takes its usual rows, however long it
    # holds the lock (smaller steps would only cost commits).
    assert pacer.step_rows(most, None, 0.0) == most
    clock.now += 0.060
    pacer.after_chunk(purging, 0.060)
    assert pacer.step_rows(most, most, 0.060) == most
    # Another connection writes: the next steps are sized to the hold ...
    per_row = 20e-6  # seconds of lock per row
    rows = most
    sizes = []
    for _ in range(12):
        other_writes(other)
        held = rows * per_row
        clock.now += held
        pacer.after_chunk(purging, held)
        before, rows = rows, pacer.step_rows(most, rows, held)
        # ... never more than double or half at once, nor past the usual rows.
        assert before / 2 <= rows <= min(before * 2, most)
        sizes.append(rows)
    assert sizes[0] == most // 2
    assert rows == pytest.approx(FOLD_BUSY_HOLD / per_row, rel=0.01)
    # A kind of step not taken yet starts from a share of its usual rows.
    assert pacer.step_rows(most, None, 0.0) == int(most * FOLD_BUSY_START)
    # However long a step holds the lock, it is not sized below the least.
    for _ in range(20):
        rows = pacer.step_rows(most, rows, 10.0)
    assert rows == int(most * FOLD_BUSY_LEAST)
    # Quiet again once the other writer has been silent long enough.
    clock.now += PURGE_BUSY_MEMORY
    assert pacer.step_rows(most, rows, 0.001) == most


def test_a_wary_pacer_paces_its_first_span_as_if_others_wrote(
        conns: List[sqlite3.Connection]) -> None:
    purging, _ = conns
    clock = FakeClock()
    pacer = SqlitePurgePacer(clock=clock)
    pacer.start(purging)
    pacer.wary()
    # A writer asleep in the busy handler since before the start would show
    # nothing: the first steps are short and each leaves it a gap.
    most = 2_000
    assert not pacer.quiet
    assert pacer.step_rows(most, None, 0.0) == int(most * FOLD_BUSY_START)
    held = 0.005
    for _ in range(3):
        clock.now += held
        pause = pacer.after_chunk(purging, held)
        assert pause >= retry_gap(held)
        clock.now += pause
    # Nobody got in through those gaps: quiet once the span is over.
    clock.now += PURGE_QUIET_SPAN
    assert pacer.quiet
    assert pacer.step_rows(most, 500, held) == most


def test_a_rollup_takes_shorter_steps_while_another_connection_writes(
        store: PeeweeTelemetryStore, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folding, "FOLD_ROWS", 60)
    monkeypatch.setattr(folding, "TIER_ROWS", 60)
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany(
            "INSERT INTO executions (created_at, repo, event_type, model, conclusion, "
            "duration_ms) VALUES (datetime(?, ?), ?, 'push', 'm', 'success', ?)",
            [(NOW, f"-{n * 7} minutes", f"r{n % 5}", 100 + n) for n in range(1, 1_200)])
    sizes: List[int] = []
    original = SqlitePurgePacer.step_rows
    other = sqlite3.connect(db_path, isolation_level=None)

    def step_rows(self: SqlitePurgePacer, most: int, rows: Any, held: float) -> int:
        sizes.append(original(self, most, rows, held))
        # Another connection writes between every two steps.
        other.execute("INSERT INTO executions (repo, event_type, model, conclusion) "
                      "VALUES ('other/writer', 'push', 'm', 'success')")
        return sizes[-1]

    monkeypatch.setattr(SqlitePurgePacer, "step_rows", step_rows)
    monkeypatch.setattr(type(store.opened.upkeep), "purge_gap", lambda self, pause: None)
    try:
        result = store.rollup()
    finally:
        other.close()
    # Paced as if another wrote from the start, then because it does: the
    # steps hold the lock briefly here, so they grow, doubling at most.
    assert sizes[:3] == [15, 30, 60] and int(60 * FOLD_BUSY_START) == 15
    # Every execution before the hour it stopped at counted once, in every tier.
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM executions WHERE created_at < ? AND id <= ?",
                            (result.counted_before.strftime("%Y-%m-%d %H:%M:%S"),
                             result.counted_ids)).fetchone()[0]
        for table in ("telemetry_orm_rollups", "telemetry_orm_daily", "telemetry_orm_monthly"):
            assert conn.execute(f"SELECT SUM(executions) FROM {table}").fetchone() == (rows,)
    assert rows == result.rows > 1_000


def test_a_folding_purges_pacer_sizes_chunks_no_smaller_than_half_its_first(
        store: PeeweeTelemetryStore, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backdate_all(db_path, 2 * PURGE_CHUNK)  # nothing rolled up: the chunks fold
    pacers: List[SqlitePurgePacer] = []
    original = type(store.backend).purge_pacer

    def purge_pacer(self: Any) -> SqlitePurgePacer:
        pacers.append(original(self))
        return pacers[-1]

    monkeypatch.setattr(type(store.backend), "purge_pacer", purge_pacer)
    assert store.purge(90).deleted == 2 * PURGE_CHUNK
    (pacer,) = pacers
    assert pacer.least == PURGE_FOLD_CHUNK // 2
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        for _ in range(20):
            pacer.after_chunk(conn, 10.0)  # however long a chunk holds the lock
    assert pacer.rows == PURGE_FOLD_CHUNK // 2


def test_pacer_turns_off_automatic_checkpoints_for_the_purge_only(
        conns: List[sqlite3.Connection]) -> None:
    purging, _ = conns
    purging.execute("PRAGMA wal_autocheckpoint = 321")
    purging.execute("PRAGMA cache_size = -1234")
    pacer = SqlitePurgePacer()
    pacer.start(purging)
    assert purging.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    # ... and gives the purge a larger page cache, for that time only.
    assert purging.execute("PRAGMA cache_size").fetchone()[0] == -PURGE_CACHE_KIB
    pacer.finish(purging)
    assert purging.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 321
    assert purging.execute("PRAGMA cache_size").fetchone()[0] == -1234


def backdate_all(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO executions (created_at, repo, event_type, model, conclusion)"
            " VALUES (datetime(?, '-100 days'), 'old/repo', 'push', 'm', 'success')",
            [(NOW,)] * rows,
        )
    conn.close()


def test_a_long_purge_keeps_the_log_short(
        store: PeeweeTelemetryStore, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A log counts as long from 64 pages, and is restarted from 128; every
    # chunk leaves a gap: 30,000 rows are then a long purge, in little time.
    monkeypatch.setattr(sqlite_wal, "LONG_LOG_PAGES", 64)
    monkeypatch.setattr(sqlite_wal, "LOG_RESTART_PAGES", 128)
    monkeypatch.setattr(sqlite_purge, "PURGE_QUIET_SPAN", 0.0)
    backdate_all(db_path, 30_000)
    store.checkpoint(truncate=True)
    sizes: List[int] = []
    result = store.purge(90, progress=lambda _: sizes.append(wal_bytes(db_path)))
    assert result.deleted == 30_000
    # Once the helper thread has copied a long log, it leaves its restart to
    # the next write and skips its passes till then; the purge's chunks are
    # no such writes, so it goes on, and the -wal file stays near the length
    # at which a gap restarts it (it grew to 3.8 MB when the helper stopped).
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    assert len(sizes) > 5 and max(sizes) < 4 * 128 * page


def wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_purge_reports_each_chunk_and_restores_the_connection(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    backdate_all(db_path, 3 * PURGE_CHUNK + 5)
    keep = store.record(minimal())
    seen: List[PurgeProgress] = []
    result = store.purge(90, progress=seen.append)
    assert result.deleted == 3 * PURGE_CHUNK + 5
    # One progress call per chunk, counting up to the result.
    assert [p.chunks for p in seen] == list(range(1, result.chunks + 1))
    assert seen[-1].deleted == result.deleted
    assert all(a.deleted < b.deleted for a, b in zip(seen, seen[1:], strict=False))
    assert 0 < result.longest_hold < 1.0
    assert result.seconds >= result.longest_hold
    conn = store.database.connection()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    witness = sqlite3.connect(db_path)
    assert witness.execute("SELECT id FROM executions").fetchall() == [(keep,)]
    assert witness.execute("SELECT datetime(?, '-90 days')", (NOW,)).fetchone()[0] == result.cutoff
    witness.close()


# -- rows whose created_at does not follow their ids -------------------------------

AGES = {"expired": "-100 days", "just expired": "-129601 minutes", "kept": "-1 days",
        "just kept": "-129599 minutes"}  # 90 days is 129,600 minutes


def insert_scattered(path: Path, rows: int, expired: int, seed: int = 5) -> Set[int]:
    """``rows`` rows whose ``created_at`` is dealt at random: ``expired`` of
    them older than 90 days (some by a minute only), the others younger (some
    by a minute only); returns the ids of the expired ones."""
    ages = [AGES["just expired" if i % 97 == 0 else "expired"] for i in range(expired)]
    ages += [AGES["just kept" if i % 89 == 0 else "kept"] for i in range(rows - expired)]
    random.Random(seed).shuffle(ages)
    conn = sqlite3.connect(path)
    with conn:
        first = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM executions").fetchone()[0]
        conn.executemany(
            "INSERT INTO executions (created_at, repo, event_type, model, conclusion)"
            " VALUES (datetime(?, ?), 'scattered/repo', 'push', 'm', 'success')",
            [(NOW, age) for age in ages],
        )
    conn.close()
    return {first + i for i, age in enumerate(ages) if age in (AGES["expired"],
                                                                AGES["just expired"])}


def ids_in(path: Path) -> Set[int]:
    witness = sqlite3.connect(path)
    try:
        return {row[0] for row in witness.execute("SELECT id FROM executions")}
    finally:
        witness.close()


def test_purge_of_scattered_rows_deletes_exactly_the_expired_ones_a_stretch_of_ids_at_a_time(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    expired = insert_scattered(db_path, 40_000, 20_000)
    kept = ids_in(db_path) - expired
    store.rollup()  # its tables made, and nothing left to fold: only deletes below
    witness = sqlite3.connect(db_path)
    snapshots: List[Set[int]] = []

    def trace(sql: str) -> None:
        if sql.startswith("BEGIN"):
            # Before the transaction: every earlier one is committed.
            snapshots.append({row[0] for row in witness.execute("SELECT id FROM executions")})

    store.database.connection().set_trace_callback(trace)
    try:
        result = store.purge(90)
    finally:
        store.database.connection().set_trace_callback(None)
        witness.close()
    snapshots.append(ids_in(db_path))

    assert result.deleted == len(expired)
    assert snapshots[-1] == kept
    chunks = [before - after for before, after in zip(snapshots, snapshots[1:], strict=False)]
    assert len(chunks) == result.chunks >= 3
    # Every chunk deletes the expired rows of one stretch of ids, all of
    # them, each stretch after the one before: it changes pages next to each
    # other rather than pages all over the file.
    ordered = sorted(expired)
    start = 0
    for chunk in chunks:
        assert chunk and chunk <= expired
        assert ordered[start:start + len(chunk)] == sorted(chunk)
        start += len(chunk)
    assert start == len(ordered)
    # How long each one held the lock is a figure of the retention bench, not
    # a unit test's: on a loaded machine any bound here would be a coin toss.
    assert result.longest_hold > 0


def test_purge_of_scattered_rows_keeps_the_rows_written_meanwhile(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    expired = insert_scattered(db_path, 30_000, 15_000, seed=6)
    kept = ids_in(db_path) - expired
    other = sqlite3.connect(db_path, isolation_level=None)
    new: List[int] = []
    backdated: List[int] = []

    def write_meanwhile(progress: PurgeProgress) -> None:
        # Between chunks, another connection records new rows; while the
        # purge is young, also rows that are already too old (copied from
        # elsewhere, say), which it must delete too.
        insert = ("INSERT INTO executions (created_at, repo, event_type, model, conclusion)"
                  " VALUES (datetime(?, ?), 'other/writer', 'push', 'm', 'success')")
        new.append(other.execute(insert, (NOW, "-0 days")).lastrowid or 0)
        if progress.chunks == 1:
            backdated.append(other.execute(insert, (NOW, "-100 days")).lastrowid or 0)

    try:
        result = store.purge(90, progress=write_meanwhile)
    finally:
        other.close()
    assert result.chunks >= 2 and backdated
    assert result.deleted == len(expired) + len(backdated)
    assert ids_in(db_path) == kept | set(new)


def test_a_scattered_purge_stopped_by_a_busy_lock_finishes_when_run_again(
        db_path: Path) -> None:
    store = create_telemetry_store(db_path, busy_timeout=50)
    expired = insert_scattered(db_path, 30_000, 15_000, seed=7)
    kept = ids_in(db_path) - expired
    blocker = sqlite3.connect(db_path, isolation_level=None)

    def block_after_one(progress: PurgeProgress) -> None:
        if progress.chunks == 1:
            blocker.execute("BEGIN IMMEDIATE")

    try:
        with pytest.raises(StoreBusyError):
            store.purge(90, progress=block_after_one)
        left = ids_in(db_path)
        assert kept <= left and left & expired  # stopped half-way, nothing kept lost
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
    assert store.purge(90).deleted == len(left & expired)
    assert ids_in(db_path) == kept
    store.close()


def test_purge_of_a_few_scattered_rows_takes_the_oldest_first(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    # So few expired rows among the ids they span that walking the ids would
    # read mostly rows to keep: the chunks take the oldest rows instead.
    expired = insert_scattered(db_path, 20_000, 200, seed=8)
    kept = ids_in(db_path) - expired
    with store.connection() as conn:
        when = store.backend.cutoff(conn, 90)
        assert len(expired) < PURGE_WALK_DENSITY * (max(expired) - min(expired) + 1)
        assert store.backend.purge_start(conn, store.model, when) == IdWalk(0, 0)
    assert store.purge(90).deleted == len(expired)
    assert ids_in(db_path) == kept


def test_purge_walks_the_ids_of_the_expired_rows_when_they_are_many(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    store.record(minimal())  # a kept row before them, which the walk leaves out
    expired = insert_scattered(db_path, 1000, 500)
    with store.connection() as conn:
        when = store.backend.cutoff(conn, 90)
        start = store.backend.purge_start(conn, store.model, when)
    assert start == IdWalk(min(expired) - 1, max(expired))


def test_purge_older_than_is_purge_deleted(store: PeeweeTelemetryStore, db_path: Path) -> None:
    backdate_all(db_path, 7)
    assert store.purge_older_than(90) == 7
    assert store.purge(90).deleted == 0


def test_checkpoint_copies_the_log_into_the_file(
        store: PeeweeTelemetryStore, db_path: Path, tmp_path: Path) -> None:
    store.record(minimal(repo="acme/checkpointed"))
    result = store.checkpoint()
    assert result.applies and result.complete and result.logged > 0
    assert result.log_file == f"{db_path}-wal"
    # The database file alone (no -wal beside it) holds the row now.
    alone = tmp_path / "alone.db"
    alone.write_bytes(db_path.read_bytes())
    conn = sqlite3.connect(alone)
    assert conn.execute("SELECT repo FROM executions").fetchall() == [("acme/checkpointed",)]
    conn.close()


def reader_behind(store: PeeweeTelemetryStore, db_path: Path) -> sqlite3.Connection:
    """A plain connection holding a snapshot that the store's last row is not in."""
    store.record(minimal())
    reader = sqlite3.connect(db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM executions").fetchone()
    store.record(minimal())
    return reader


def test_a_reader_keeps_a_truncate_checkpoint_from_emptying_the_log(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    reader = reader_behind(store, db_path)
    try:
        with store.connection() as conn:
            conn.execute("PRAGMA busy_timeout = 50")
            result = store.checkpoint(truncate=True)
            conn.execute("PRAGMA busy_timeout = 5000")
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert result.applies and result.busy and not result.emptied and not result.complete
    assert store.checkpoint(truncate=True).emptied
    assert Path(f"{db_path}-wal").stat().st_size == 0


def test_a_restart_that_must_not_wait_is_not_tried_while_a_reader_holds_an_old_snapshot(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    reader = reader_behind(store, db_path)
    statements: List[str] = []
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.set_trace_callback(statements.append)
    try:
        # The reader keeps the PASSIVE pass from copying the whole log: the
        # RESTART, which would only wait for it, is not run.
        result = checkpoint(conn, "RESTART", busy_timeout=5000, blocking=False)
        assert result.busy and 0 <= result.copied < result.logged
        assert not [s for s in statements if "RESTART" in s]
        # Once the reader has moved on, it is.
        reader.execute("COMMIT")
        result = checkpoint(conn, "RESTART", busy_timeout=5000, blocking=False)
        assert not result.busy and result.complete
        assert [s for s in statements if "RESTART" in s]
    finally:
        conn.close()
        reader.close()


def test_a_failed_purge_restores_the_connection_too(db_path: Path) -> None:
    store = create_telemetry_store(db_path, busy_timeout=50)
    backdate_all(db_path, 10)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError):
            store.purge_older_than(90)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    conn = store.database.connection()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert store.purge_older_than(90) == 10
    store.close()


# -- keys ------------------------------------------------------------------------------


def keys_in(path: Path) -> List[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT key, execution_id FROM telemetry_orm_keys "
                            "ORDER BY key").fetchall()


def test_the_keys_table_is_one_b_tree_ordered_by_key(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    store.record(minimal(), key="delivery-1")
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        objects = conn.execute("SELECT type, name, sql FROM sqlite_master "
                               "WHERE tbl_name = 'telemetry_orm_keys'").fetchall()
    # No index beside it: the table itself is the b-tree by key.
    assert [(kind, name) for kind, name, _ in objects] == [("table", "telemetry_orm_keys")]
    assert objects[0][2].endswith("WITHOUT ROWID")


def test_a_purge_sweeps_the_keys_of_rows_deleted_by_it_or_by_another_program(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    ids = [store.record(minimal(), key=f"k-{n:05d}") for n in range(12_000)]
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        # Every third row expired; a few rows deleted as the original store's
        # own purge does, leaving their keys behind.
        conn.executemany("UPDATE executions SET created_at = '2000-01-01 00:00:00' "
                         "WHERE id = ?", [(i,) for i in ids[::3]])
        conn.executemany("DELETE FROM executions WHERE id = ?", [(i,) for i in ids[1:30:3]])
    kept = set(ids) - set(ids[::3]) - set(ids[1:30:3])
    # More keys than one sweep step: the sweep goes on from where it stopped.
    assert store.purge_older_than(90) == len(ids[::3])
    assert {row_id for _, row_id in keys_in(db_path)} == kept
    # The keys of the deleted rows are kept as purged keys: recorded again,
    # they answer their old rows' ids and write nothing.
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        purged = {row_id for (row_id,) in conn.execute(
            "SELECT execution_id FROM telemetry_orm_purged_keys")}
    assert purged == set(ids) - kept
    assert store.record(minimal(), key="k-00000") == ids[0]
    assert store.record(minimal(), key="k-00001") == ids[1]
    assert store.model.select().count() == len(kept)


def test_a_purge_moves_thousands_of_gone_keys_in_a_few_statements(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    ids = store.record_many([minimal() for _ in range(6_000)],
                            keys=[f"k-{n:05d}" for n in range(6_000)])
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany("UPDATE executions SET created_at = '2000-01-01 00:00:00' "
                         "WHERE id = ?", [(i,) for i in ids[:4_000]])
    statements: List[str] = []
    store.database.connection().set_trace_callback(statements.append)
    try:
        assert store.purge_older_than(90) == 4_000
    finally:
        store.database.connection().set_trace_callback(None)
    # A stretch of keys at a time, not a statement per key.
    moves = [s for s in statements if s.startswith('DELETE FROM "telemetry_orm_keys"')]
    assert 0 < len(moves) <= 10
    assert {row_id for _, row_id in keys_in(db_path)} == set(ids[4_000:])
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        purged = dict(conn.execute("SELECT key, execution_id FROM telemetry_orm_purged_keys"))
    assert purged == {f"k-{n:05d}": ids[n] for n in range(4_000)}


def test_the_sweep_looks_up_the_row_of_each_key_once_and_leaves_no_scratch_table(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    ids = store.record_many([minimal() for _ in range(6_000)],
                            keys=[f"k-{n:05d}" for n in range(6_000)])
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany("UPDATE executions SET created_at = '2000-01-01 00:00:00' "
                         "WHERE id = ?", [(i,) for i in ids[1::2]])
        # A gone key already among the purged keys (another program wrote
        # it back): it leaves the keys, and its purged key stays as it was.
        conn.execute("INSERT INTO telemetry_orm_purged_keys (key, execution_id, purged_at) "
                     "VALUES ('k-00001', -1, '2026-01-01 00:00:00')")
    statements: List[str] = []
    connection = store.database.connection()
    connection.set_trace_callback(statements.append)
    try:
        assert store.purge_older_than(90) == 3_000
    finally:
        connection.set_trace_callback(None)
    steps = [s for s in statements if s.startswith('DELETE FROM "telemetry_orm_keys"')]
    lookups = [s for s in statements
               if "telemetry_orm_keys" in s and 'FROM "executions"' in s]
    assert steps and len(lookups) == len(steps)
    assert ("telemetry_orm_gone_keys",) not in connection.execute(
        "SELECT name FROM sqlite_temp_master").fetchall()
    assert {row_id for _, row_id in keys_in(db_path)} == set(ids[::2])
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        purged = {key: (row_id, at) for key, row_id, at in conn.execute(
            "SELECT key, execution_id, purged_at FROM telemetry_orm_purged_keys")}
    assert len(purged) == 3_000
    assert purged.pop("k-00001") == (-1, "2026-01-01 00:00:00")
    assert {key: row_id for key, (row_id, _) in purged.items()} == {
        f"k-{n:05d}": ids[n] for n in range(3, 6_000, 2)}


def test_a_sweep_step_that_read_ahead_looks_again_under_the_lock_if_anyone_wrote_meanwhile(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    ids = store.record_many([minimal() for _ in range(6_000)],
                            keys=[f"k-{n:05d}" for n in range(6_000)])
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany("UPDATE executions SET created_at = '2000-01-01 00:00:00' "
                         "WHERE id = ?", [(i,) for i in ids[1::2]])
    other = sqlite3.connect(db_path, isolation_level=None)
    seen: List[str] = []

    def meanwhile(statement: str) -> None:
        seen.append(statement)
        if statement.startswith("BEGIN IMMEDIATE") and len(seen) > 1 and seen[-2].startswith(
                'INSERT INTO "temp"."telemetry_orm_gone_keys"') and not other.in_transaction:
            # Between the first step's reading and its lock, another
            # connection deletes a row the purge keeps, and writes back one
            # the purge deleted (as a copy with its ids would).
            other.execute("BEGIN IMMEDIATE")
            other.execute("DELETE FROM executions WHERE id = ?", (ids[0],))
            other.execute("INSERT INTO executions (id, created_at, repo, event_type, model, "
                          "conclusion) VALUES (?, '2026-11-20 15:00:00', 'r', 'push', 'm', "
                          "'success')", (ids[1],))
            other.execute("COMMIT")
            seen.append("-- wrote")

    connection = store.database.connection()
    connection.set_trace_callback(meanwhile)
    try:
        assert store.purge_older_than(90) == 3_000
    finally:
        connection.set_trace_callback(None)
        other.close()
    assert "-- wrote" in seen  # the step read ahead, then found the other write
    # The keys moved are those whose row was gone when the step committed.
    assert dict(keys_in(db_path)) == {
        **{f"k-{n:05d}": ids[n] for n in range(2, 6_000, 2)}, "k-00001": ids[1]}
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        purged = dict(conn.execute("SELECT key, execution_id FROM telemetry_orm_purged_keys"))
    assert purged == {**{f"k-{n:05d}": ids[n] for n in range(3, 6_000, 2)}, "k-00000": ids[0]}


def test_a_purge_that_folds_its_rows_starts_with_a_chunk_short_enough_for_the_hold(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    backdate_all(db_path, 2 * PURGE_CHUNK)  # nothing rolled up: each chunk folds its rows
    seen: List[PurgeProgress] = []
    assert store.purge(90, progress=seen.append).deleted == 2 * PURGE_CHUNK
    assert seen[0].deleted <= PURGE_FOLD_CHUNK
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        counted = conn.execute("SELECT SUM(executions) FROM telemetry_orm_rollups").fetchone()
    assert counted == (2 * PURGE_CHUNK,)


def test_chunks_of_rows_the_rollups_count_already_skip_the_fold_and_count_them_once(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    backdate_all(db_path, 4 * PURGE_CHUNK)
    assert store.rollup().rows == 4 * PURGE_CHUNK
    statements: List[str] = []
    seen: List[PurgeProgress] = []
    store.database.connection().set_trace_callback(statements.append)
    try:
        assert store.purge(90, progress=seen.append).deleted == 4 * PURGE_CHUNK
    finally:
        store.database.connection().set_trace_callback(None)
    # Only the first chunk looks for rows to fold (and records the cutoff).
    counts = [s for s in statements if s.startswith('SELECT COUNT(*) FROM "executions"')]
    assert len(seen) >= 2 and len(counts) == 1
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        counted = conn.execute("SELECT SUM(executions) FROM telemetry_orm_rollups").fetchone()
        purged_before = conn.execute(
            "SELECT purged_before FROM telemetry_orm_rollup_state").fetchone()
    assert counted == (4 * PURGE_CHUNK,)
    assert purged_before is not None and purged_before[0] is not None


def test_a_purge_with_nothing_to_delete_still_sweeps_keys_left_behind(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    first, second = store.record(minimal(), key="a"), store.record(minimal(), key="b")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("DELETE FROM executions WHERE id = ?", (first,))
    assert store.purge_older_than(90) == 0
    assert keys_in(db_path) == [("b", second)]


def test_a_keys_table_in_the_postgresql_layout_keeps_working(
        store: PeeweeTelemetryStore, db_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute('CREATE TABLE "telemetry_orm_keys" ("execution_id" INTEGER NOT NULL '
                     'PRIMARY KEY, "key" TEXT NOT NULL)')
        conn.execute('CREATE UNIQUE INDEX "idx_telemetry_orm_keys_key" '
                     'ON "telemetry_orm_keys" ("key")')
    old = store.record(minimal(), key="old")
    new = store.record(minimal(), key="new")
    assert store.record(minimal(), key="old") == old
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE executions SET created_at = '2000-01-01 00:00:00' WHERE id = ?",
                     (old,))
    assert store.purge_older_than(90) == 1
    assert keys_in(db_path) == [("new", new)]
