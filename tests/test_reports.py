"""Reports: numbers checked against plain SQL and Python run on the same file."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import peewee
import pytest
from support import FIXED_NOW, make_seed_database

from telemetry_orm import (
    DatabaseError,
    PeeweeTelemetryStore,
    StoreClosedError,
    TelemetryValidationError,
    create_telemetry_store,
)
from telemetry_orm.factories import ExecutionFactory
from telemetry_orm.record import MAX_COST_USD, MAX_COUNT
from telemetry_orm.reports import (
    GROUP_KEYS,
    METRICS,
    Metrics,
    database_stats,
    export_rows,
    open_readonly,
    report,
)
from telemetry_orm.schema import COLUMN_NAMES

UTC = dt.timezone.utc
NOW = FIXED_NOW  # rows are placed relative to it: the same groups on any day
pytestmark = pytest.mark.usefixtures("pinned_clock")
REPOS = ("acme/api", "acme/web", "globex/billing")
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
CONCLUSIONS = ("success", "success", "success", "failure", "error")


def fill(store: PeeweeTelemetryStore, rows: int, days: int = 90, seed: int = 7) -> None:
    """Varied executions over the last ``days`` days, some with equal durations."""
    rng = random.Random(seed)
    with store.database.atomic():  # one commit: quick to arrange
        for _ in range(rows):
            ExecutionFactory.create(
                store=store,
                created_at=NOW - dt.timedelta(seconds=rng.randint(0, days * 86400)),
                repo=rng.choice(REPOS),
                model=rng.choice(MODELS),
                conclusion=rng.choice(CONCLUSIONS),
                pr_number=rng.choice((None, 1, 2, 3)),
                duration_ms=rng.choice((1000, 2000, rng.randint(1, 600_000))),
            )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "telemetry.db"
    with create_telemetry_store(path) as store:
        fill(store, 240)  # type: ignore[arg-type]
    return path


@pytest.fixture
def filled(store: PeeweeTelemetryStore, db_path: Path, template: Path) -> PeeweeTelemetryStore:
    """The store with 240 varied executions (copied from a module-wide template)."""
    conn = sqlite3.connect(db_path)
    conn.execute("ATTACH DATABASE ? AS template", (str(template),))
    conn.execute("INSERT INTO executions SELECT * FROM template.executions")
    conn.commit()
    conn.close()
    return store


def stamp(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- The independent witness: plain SQL for sums, Python for the rest -----------


def nearest_rank_p95(durations: Sequence[int]) -> int:
    ordered = sorted(durations)
    return ordered[math.ceil(len(ordered) * 95 / 100) - 1]


def label(key: str, created_at: str) -> Any:
    day = dt.date.fromisoformat(created_at[:10])
    if key == "day":
        return day.isoformat()
    if key == "month":
        return day.strftime("%Y-%m")
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def expected(
    conn: sqlite3.Connection, keys: Sequence[str], where: str = "1", params: Sequence[Any] = ()
) -> Dict[Tuple[Any, ...], Dict[str, Any]]:
    """Per group: the metrics computed from the raw rows, without the package."""
    rows = conn.execute(f"SELECT * FROM executions WHERE {where}", params).fetchall()
    groups: Dict[Tuple[Any, ...], List[sqlite3.Row]] = defaultdict(list)
    for row in rows:
        key = tuple(
            label(k, row["created_at"]) if k in ("day", "week", "month") else row[k]
            for k in keys
        )
        groups[key].append(row)
    result = {}
    for key, members in groups.items():
        ids = ",".join(str(r["id"]) for r in members)
        sums = conn.execute(
            "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),"
            " SUM(cache_creation_tokens), SUM(input_tokens + output_tokens + cache_read_tokens"
            " + cache_creation_tokens), SUM(cost_usd), AVG(duration_ms),"
            " SUM(conclusion <> 'success')"
            f" FROM executions WHERE id IN ({ids})"
        ).fetchone()
        names = [m for m in METRICS if m != "p95_duration_ms"]
        metrics = dict(zip(names, sums, strict=True))
        metrics["p95_duration_ms"] = nearest_rank_p95([r["duration_ms"] for r in members])
        result[key] = metrics
    return result


def assert_metrics(actual: Metrics, wanted: Dict[str, Any]) -> None:
    for name in METRICS:
        value = getattr(actual, name)
        if name == "cost_usd":
            assert value == pytest.approx(wanted[name], abs=1e-6), name
        elif name == "avg_duration_ms":
            assert value == pytest.approx(wanted[name], abs=0.0501), name
        else:
            assert value == wanted[name], name


def as_groups(result: Any) -> Dict[Tuple[Any, ...], Metrics]:
    return {tuple(row.keys[k] for k in result.key_names): row.metrics for row in result.rows}


# --- Numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "group_by, columns",
    [
        (["repo"], ["repo"]),
        (["model"], ["model"]),
        (["provider"], ["provider"]),
        (["event_type"], ["event_type"]),
        (["conclusion"], ["conclusion"]),
        (["day"], ["day"]),
        (["week"], ["week"]),
        (["month"], ["month"]),
        (["pr"], ["repo", "pr_number"]),
        (["month", "model"], ["month", "model"]),
    ],
)
def test_every_group_matches_independent_sql(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, group_by: List[str],
    columns: List[str],
) -> None:
    result = filled.report(group_by=group_by)
    wanted = expected(witness, columns)
    groups = as_groups(result)
    assert result.key_names == tuple(columns)
    assert set(groups) == set(wanted)
    for key, metrics in groups.items():
        assert_metrics(metrics, wanted[key])


def test_totals_match_independent_sql(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    since = NOW - dt.timedelta(days=30)
    result = filled.report(since=since, group_by=["repo", "model"])
    wanted = expected(witness, [], "created_at >= ?", [stamp(since)])[()]
    assert_metrics(result.totals, wanted)
    assert result.totals.executions == sum(r.metrics.executions for r in result.rows)


def test_total_tokens_is_the_sum_of_the_four_counts(filled: PeeweeTelemetryStore) -> None:
    for metrics in [filled.report().totals, *(r.metrics for r in filled.report().rows)]:
        assert metrics.total_tokens == (
            metrics.input_tokens + metrics.output_tokens
            + metrics.cache_read_tokens + metrics.cache_creation_tokens
        )


def test_failed_counts_every_conclusion_but_success(
    store: PeeweeTelemetryStore,
) -> None:
    for conclusion in ("success", "success", "failure", "error", "timeout", "Success"):
        ExecutionFactory.create(store=store, conclusion=conclusion)
    assert store.report().totals.failed == 4


@pytest.mark.parametrize(
    "durations, p95",
    [
        ([500], 500),
        (list(range(1, 20)), 19),  # 19 values: rank ceil(18.05) = 19, the largest
        (list(range(1, 21)), 19),  # 20 values: rank 19
        (list(range(1, 22)), 20),  # 21 values: rank ceil(19.95) = 20
        (list(range(1, 101)), 95),
        ([7] * 30 + [9000], 7),  # ties
        ([0, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 9], 5),
    ],
)
def test_p95_is_the_nearest_rank_percentile(
    store: PeeweeTelemetryStore, durations: List[int], p95: int
) -> None:
    shuffled = list(durations)
    random.Random(1).shuffle(shuffled)
    for duration in shuffled:
        ExecutionFactory.create(store=store, repo="acme/api", duration_ms=duration)
    ExecutionFactory.create(store=store, repo="other/repo", duration_ms=10**9)
    result = store.report(group_by="repo")
    assert nearest_rank_p95(durations) == p95
    assert as_groups(result)[("acme/api",)].p95_duration_ms == p95
    assert result.totals.p95_duration_ms == nearest_rank_p95([*durations, 10**9])


def test_empty_report_has_zero_totals_and_no_rows(store: PeeweeTelemetryStore) -> None:
    result = store.report(group_by=["repo", "day"])
    assert result.rows == ()
    assert result.totals == Metrics()
    assert result.totals.avg_duration_ms is None
    assert result.totals.p95_duration_ms is None


def test_no_group_keys_gives_totals_only(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    result = filled.report(group_by=[])
    assert result.rows == ()
    assert_metrics(result.totals, expected(witness, [])[()])


# --- Filters -------------------------------------------------------------------


def test_since_is_inclusive_and_until_exclusive(store: PeeweeTelemetryStore) -> None:
    start = dt.datetime(2025, 3, 1, 12, 0, 0)
    for seconds in (-1, 0, 1, 3599, 3600, 3601):
        ExecutionFactory.create(store=store, created_at=start + dt.timedelta(seconds=seconds))
    result = store.report(since=start, until=start + dt.timedelta(hours=1))
    assert result.totals.executions == 3  # 0, 1 and 3599 seconds after


def test_aware_datetimes_are_compared_in_utc(store: PeeweeTelemetryStore) -> None:
    ExecutionFactory.create(store=store, created_at=dt.datetime(2025, 3, 1, 10, 0, 0))
    paris = dt.timezone(dt.timedelta(hours=1))
    later = store.report(since=dt.datetime(2025, 3, 1, 11, 0, 1, tzinfo=paris))
    same = store.report(since=dt.datetime(2025, 3, 1, 11, 0, 0, tzinfo=paris))
    assert (later.totals.executions, same.totals.executions) == (0, 1)


@pytest.mark.parametrize(
    "option, column, value",
    [
        ("repo", "repo", "acme/web"),
        ("model", "model", "claude-haiku-4-5"),
        ("event_type", "event_type", "pull_request.opened"),
        ("conclusion", "conclusion", "failure"),
    ],
)
def test_value_filters_keep_only_matching_rows(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, option: str, column: str,
    value: str,
) -> None:
    since = NOW - dt.timedelta(days=45)
    result = filled.report(since=since, group_by="week", **{option: value})
    wanted = expected(witness, ["week"], f"created_at >= ? AND {column} = ?", [stamp(since), value])
    assert set(as_groups(result)) == set(wanted)
    for key, metrics in as_groups(result).items():
        assert_metrics(metrics, wanted[key])


# --- Keys and order ---------------------------------------------------------------


@pytest.mark.parametrize(
    "day, week",
    [
        ("2021-01-03", "2020-W53"),  # a Sunday that belongs to the previous ISO year
        ("2024-12-30", "2025-W01"),  # a Monday that belongs to the next ISO year
        ("2020-12-31", "2020-W53"),
        ("2021-01-04", "2021-W01"),
        ("2019-12-30", "2020-W01"),
        ("2027-01-01", "2026-W53"),
        ("2023-01-01", "2022-W52"),
        ("2024-02-29", "2024-W09"),
    ],
)
def test_week_is_the_iso_week(store: PeeweeTelemetryStore, day: str, week: str) -> None:
    for hms in ("00:00:00", "23:59:59"):
        ExecutionFactory.create(store=store, created_at=dt.datetime.fromisoformat(f"{day} {hms}"))
    year, number, _ = dt.date.fromisoformat(day).isocalendar()
    assert week == f"{year}-W{number:02d}"
    result = store.report(group_by=["week", "day", "month"])
    assert [row.keys for row in result.rows] == [
        {"week": week, "day": day, "month": day[:7]}
    ]
    assert result.rows[0].metrics.executions == 2


def test_pr_groups_by_repo_and_pr_number(store: PeeweeTelemetryStore) -> None:
    for repo, pr in [("a/x", 1), ("a/x", 1), ("a/x", 2), ("b/y", 1), ("b/y", None)]:
        ExecutionFactory.create(store=store, repo=repo, pr_number=pr)
    result = store.report(group_by=["pr", "repo"])
    assert result.key_names == ("repo", "pr_number")
    counts = {(r.keys["repo"], r.keys["pr_number"]): r.metrics.executions for r in result.rows}
    assert counts == {("a/x", 1): 2, ("a/x", 2): 1, ("b/y", 1): 1, ("b/y", None): 1}


def test_rows_without_time_keys_come_by_cost_descending(filled: PeeweeTelemetryStore) -> None:
    costs = [row.metrics.cost_usd for row in filled.report(group_by=["pr"]).rows]
    assert len(costs) > 3
    assert costs == sorted(costs, reverse=True)


def test_time_buckets_come_first_ascending_then_cost_descending(
    filled: PeeweeTelemetryStore,
) -> None:
    rows = filled.report(group_by=["model", "month"]).rows
    order = [(row.keys["month"], -row.metrics.cost_usd) for row in rows]
    assert len({month for month, _ in order}) > 1
    assert order == sorted(order)


# --- Arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, field",
    [
        ({"group_by": ["repo", "hour"]}, "group_by"),
        ({"group_by": 3}, "group_by"),
        ({"since": "2025-01-01"}, "since"),
        ({"until": 1700000000}, "until"),
        ({"since": dt.datetime(2025, 2, 1), "until": dt.datetime(2025, 1, 1)}, "until"),
        ({"repo": ""}, "repo"),
        ({"model": 4}, "model"),
    ],
)
def test_bad_arguments_name_the_argument(
    store: PeeweeTelemetryStore, options: Dict[str, Any], field: str
) -> None:
    with pytest.raises(TelemetryValidationError) as caught:
        store.report(**options)
    assert caught.value.field == field


def test_every_documented_key_is_accepted(store: PeeweeTelemetryStore) -> None:
    ExecutionFactory.create(store=store, pr_number=5)
    result = store.report(group_by=list(GROUP_KEYS))
    assert set(result.key_names) == set(GROUP_KEYS) - {"pr"} | {"pr_number"}
    assert result.totals.executions == 1


def test_report_on_a_closed_store_raises(store: PeeweeTelemetryStore) -> None:
    store.close()
    with pytest.raises(StoreClosedError):
        store.report()


def test_report_accepts_a_store_or_a_database(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection
) -> None:
    through_function = report(filled, group_by="model")
    through_database = report(filled.database, group_by="model")
    assert as_groups(through_function) == as_groups(through_database)
    assert through_function.totals.executions == witness.execute(
        "SELECT COUNT(*) FROM executions").fetchone()[0]
    with pytest.raises(TelemetryValidationError):
        report("telemetry.db")


# --- Query plans ---------------------------------------------------------------


@pytest.fixture
def statements() -> Iterator[List[Tuple[str, Any]]]:
    """The SQL peewee runs (it logs each statement at DEBUG)."""
    captured: List[Tuple[str, Any]] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, tuple):
                captured.append(record.msg)

    handler = Grab(logging.DEBUG)
    logger = logging.getLogger("peewee")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield captured
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.mark.parametrize(
    "group_by, filters",
    [
        (["repo"], {}),
        (["repo", "model"], {"repo": "acme/api"}),
        (["pr"], {"model": "claude-haiku-4-5"}),
        (["day", "conclusion"], {}),
    ],
)
@pytest.mark.parametrize("analyzed", [False, True])
def test_time_filtered_queries_search_the_created_at_index(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection,
    statements: List[Tuple[str, Any]], group_by: List[str], filters: Dict[str, str],
    analyzed: bool,
) -> None:
    if analyzed:  # with or without statistics, the repo index must not win
        witness.execute("ANALYZE")
    filled.report(since=NOW - dt.timedelta(days=7), group_by=group_by, **filters)
    selects = [(sql, params) for sql, params in statements if sql.startswith("SELECT")]
    assert len(selects) == 3  # the groups, their percentiles, the total percentile
    for sql, params in selects:
        plan = " / ".join(r[3] for r in witness.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "USING INDEX idx_executions_created_at (created_at>?)" in plan, plan
        assert "idx_executions_repo" not in plan, plan


def test_without_a_time_filter_a_repo_filter_may_use_the_repo_index(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection,
    statements: List[Tuple[str, Any]],
) -> None:
    filled.report(repo="acme/api", group_by="model")
    sql, params = next(s for s in statements if s[0].startswith("SELECT"))
    plan = " / ".join(r[3] for r in witness.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "idx_executions_repo (repo=?)" in plan, plan


# --- Reading only --------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_readonly_report_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    with create_telemetry_store(path) as store:
        fill(store, 30)
    before = digest(path)
    database = open_readonly(path)
    try:
        result = report(database, group_by=["week", "pr"])
        stats = database_stats(database, str(path))
        columns, rows = export_rows(database)
        exported = list(rows)
    finally:
        database.close()
    assert result.totals.executions == stats.rows == len(exported) == 30
    assert digest(path) == before
    with pytest.raises(peewee.OperationalError, match="readonly"):
        database = open_readonly(path)
        try:
            database.execute_sql("DELETE FROM executions")
        finally:
            database.close()


def test_open_readonly_creates_nothing_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "telemetry.db"
    with pytest.raises(DatabaseError, match="no such database file") as caught:
        open_readonly(path)
    assert str(path) in str(caught.value)
    assert not (tmp_path / "missing").exists()


def test_open_readonly_takes_any_file_name(tmp_path: Path) -> None:
    path = tmp_path / "odd #1 100%" / "tele?metry&mode=rw.db"
    path.parent.mkdir()
    make_seed_database(path, rows=3)
    database = open_readonly(path)
    try:
        assert report(database).totals.executions == 3
    finally:
        database.close()
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(("-wal", "-shm"))) \
        == [path.name]


def test_open_readonly_explains_a_table_that_predates_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE executions (id INTEGER PRIMARY KEY, created_at TEXT, repo TEXT,"
                 " event_type TEXT, model TEXT, conclusion TEXT)")
    conn.close()
    with pytest.raises(DatabaseError, match="predates columns delivery_id, pr_number"):
        open_readonly(path)


def test_open_readonly_refuses_files_that_are_not_telemetry(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all\n" * 100)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE things (x)").connection.close()
    for path, message in [(text, "not a SQLite database"), (other, "no 'executions' table"),
                          (tmp_path, "is not a file")]:
        with pytest.raises(DatabaseError, match=message) as caught:
            open_readonly(path)
        assert str(path) in str(caught.value)


def test_a_report_sees_one_snapshot_and_does_not_block_writers(
    filled: PeeweeTelemetryStore, db_path: Path, statements: List[Tuple[str, Any]]
) -> None:
    writer = sqlite3.connect(db_path, timeout=0.5, isolation_level=None)
    written: List[int] = []

    class WriteDuringReport(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Runs just before the report's second query, inside its transaction.
            if len([s for s in statements if s[0].startswith("SELECT")]) == 2 and not written:
                writer.execute(
                    "INSERT INTO executions (repo, event_type, model, conclusion, duration_ms)"
                    " VALUES ('acme/api', 'push', 'claude-sonnet-4-5', 'success', 999999999)"
                )
                written.append(1)

    handler = WriteDuringReport()
    logging.getLogger("peewee").addHandler(handler)
    try:
        database = open_readonly(db_path)
        try:
            result = report(database, group_by="repo")
        finally:
            database.close()
    finally:
        logging.getLogger("peewee").removeHandler(handler)
    count = writer.execute("SELECT COUNT(*) FROM executions").fetchone()[0]
    writer.close()
    assert written == [1]  # the writer committed while the report was reading
    assert result.totals.executions == count - 1 == 240
    assert result.totals.p95_duration_ms != 999999999
    assert all(r.metrics.p95_duration_ms != 999999999 for r in result.rows)


# --- The original store's files -------------------------------------------------


def test_report_on_a_typescript_store_file(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    make_seed_database(path, rows=25)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE executions SET created_at = datetime(?, '-' || id || ' days'),"
                 " conclusion = CASE WHEN id % 5 = 0 THEN 'failure' ELSE 'success' END",
                 (NOW.strftime("%Y-%m-%d %H:%M:%S"),))
    conn.commit()
    conn.row_factory = sqlite3.Row
    wanted = expected(conn, ["week"])
    database = open_readonly(path)
    try:
        result = report(database, group_by="week")
    finally:
        database.close()
    assert set(as_groups(result)) == set(wanted)
    for key, metrics in as_groups(result).items():
        assert_metrics(metrics, wanted[key])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0  # left as it was
    conn.close()


# --- Statistics and export -----------------------------------------------------------


def test_database_stats_match_the_file(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path
) -> None:
    database = open_readonly(db_path)
    try:
        stats = database_stats(database, str(db_path))
    finally:
        database.close()
    rows, oldest, newest = witness.execute(
        "SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM executions").fetchone()
    assert (stats.rows, stats.oldest, stats.newest) == (rows, oldest, newest)
    assert stats.file_bytes == db_path.stat().st_size
    assert stats.schema_version == witness.execute("PRAGMA user_version").fetchone()[0] == 1
    assert stats.journal_mode == "wal"


def test_export_rows_gives_every_column_of_the_matching_rows_in_time_order(
    filled: PeeweeTelemetryStore, witness: sqlite3.Connection, db_path: Path
) -> None:
    since, until = NOW - dt.timedelta(days=20), NOW - dt.timedelta(days=5)
    database = open_readonly(db_path)
    try:
        columns, rows = export_rows(database, since=since, until=until)
        exported = list(rows)
    finally:
        database.close()
    wanted = witness.execute(
        "SELECT * FROM executions WHERE created_at >= ? AND created_at < ?"
        " ORDER BY created_at, id", (stamp(since), stamp(until))).fetchall()
    assert columns == (*COLUMN_NAMES, "labels")
    assert exported == [(*row, {}) for row in wanted]
    assert len(exported) > 10


# -- values at the limits ------------------------------------------------------------


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_every_report_of_the_largest_values_completes_and_is_strict_json(
        tmp_path: Path) -> None:
    from telemetry_orm import formats
    from telemetry_orm.cli import main

    path = tmp_path / "huge.db"
    create_telemetry_store(path).close()
    # As another program may write them: past every bound, an infinite cost.
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO executions (repo, event_type, model, conclusion, "
                     "input_tokens, duration_ms, cost_usd) VALUES (?, 'push', 'm', 'success', "
                     "?, ?, ?)", [("acme/api", 2**63 - 1, 2**63 - 1, 1.7e308)] * 2
                     + [("acme/web", 0, 0, 9e999)])
    conn.commit()
    conn.close()
    database = open_readonly(path)
    try:
        for group_by in ([], ["repo"], ["model", "day"], ["pr"]):
            result = report(database, group_by=group_by)
            assert result.totals.executions == 3
            # Each value counts as its bound: no sum fails or overflows.
            assert result.totals.input_tokens == 2 * MAX_COUNT
            document = _strict(formats.render_report(result, "json"))
            assert document["totals"]["cost_usd"] == 3 * MAX_COST_USD
            for fmt in ("table", "markdown", "csv"):
                assert formats.render_report(result, fmt)
    finally:
        database.close()
    for argv in (["report", "--since", "2000-01-01", "--format", "json"],
                 ["stats", "--format", "json"]):
        out = io.StringIO()
        assert main([*argv, "--db", str(path)], out=out) == 0
        _strict(out.getvalue())
    out = io.StringIO()
    assert main(["export", "--db", str(path), "--format", "jsonl"], out=out) == 0
    rows = [_strict(line) for line in out.getvalue().splitlines()]
    assert [r["cost_usd"] for r in rows] == [1.7e308, 1.7e308, None]
