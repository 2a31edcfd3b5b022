"""The same rows in a SQLite file and in PostgreSQL give the same reports,
exports, statistics and purge counts, through the library and the command
line (skipped, with the reason, when no PostgreSQL server is configured)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import pytest
from support import FIXED_NOW, Witness

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store
from telemetry_orm.cli import main
from telemetry_orm.factories import ExecutionFactory, TelemetryRecordFactory
from telemetry_orm.reports import Report, database_stats, export_rows, open_readonly

UTC = dt.timezone.utc
NOW = FIXED_NOW  # rows are placed relative to it, and the stores' clock pinned there
pytestmark = pytest.mark.usefixtures("pinned_clock")
#: (SQLite path, PostgreSQL URL, (SQLite store, PostgreSQL store)).
TwinFiles = Tuple[str, str, Tuple[PeeweeTelemetryStore, ...]]
# Around the turn of an ISO year: 2024-12-30 is in week 2025-W01.
YEAR_END = [dt.datetime(2024, 12, 27, 23, 59, 59, tzinfo=UTC) + dt.timedelta(hours=13 * i)
            for i in range(20)]


@contextlib.contextmanager
def make_twins(sqlite_path: Path, pg_url: str) -> Iterator[Tuple[PeeweeTelemetryStore, ...]]:
    """A SQLite store and a PostgreSQL store holding the very same 140 rows."""
    rng = random.Random(20250101)
    stamps = [NOW - dt.timedelta(hours=17 * i, seconds=rng.randint(0, 3599))
              for i in range(120)] + YEAR_END
    conclusions = ("success", "success", "success", "failure", "error")
    rows = []
    for i, (record, when) in enumerate(
        zip(TelemetryRecordFactory.build_batch(len(stamps)), stamps, strict=True)
    ):
        values = record.as_dict()
        values.update(repo=("acme/api", "acme/web", "globex/billing")[i % 3],
                      conclusion=conclusions[i % 5], duration_ms=rng.randint(100, 400_000))
        rows.append((when, values))
    sqlite_store = create_telemetry_store(sqlite_path)
    pg_store = create_telemetry_store(pg_url)
    try:
        for store in (sqlite_store, pg_store):
            with store.database.atomic():
                for when, values in rows:
                    ExecutionFactory.create(store=store, created_at=when, **values)
        yield sqlite_store, pg_store
    finally:
        sqlite_store.close()
        pg_store.close()


@pytest.fixture(scope="module")
def twin_files(tmp_path_factory: pytest.TempPathFactory, module_pg_url: str) -> Iterator[
    TwinFiles
]:
    """The twins, shared by the read-only tests of this module: (SQLite path,
    PostgreSQL URL, (SQLite store, PostgreSQL store))."""
    path = tmp_path_factory.mktemp("twins") / "twin.db"
    with make_twins(path, module_pg_url) as stores:
        yield str(path), module_pg_url, stores


@pytest.fixture
def twins(twin_files: TwinFiles) -> Tuple[
    PeeweeTelemetryStore, ...
]:
    return twin_files[2]


def comparable(report: Report) -> Dict[str, Any]:
    return {
        "keys": report.key_names,
        "rows": [row.as_dict() for row in report.rows],
        "totals": report.totals.as_dict(),
    }


def assert_same(left: Dict[str, Any], right: Dict[str, Any]) -> None:
    # Sums of doubles may differ in the last bit with the order of addition.
    assert left["keys"] == right["keys"]
    assert len(left["rows"]) == len(right["rows"])
    for a, b in zip(left["rows"] + [left["totals"]], right["rows"] + [right["totals"]],
                    strict=True):
        assert a.keys() == b.keys()
        for name in a:
            if name == "cost_usd":
                assert a[name] == pytest.approx(b[name], abs=1e-6), name
            else:
                assert a[name] == b[name], name


GROUPINGS: List[Sequence[str]] = [
    [], ["repo"], ["model", "conclusion"], ["day"], ["week"], ["month", "repo"], ["pr"],
    ["event_type", "provider"], ["week", "model"],
]


def test_twins_hold_the_same_rows(twins: Tuple[PeeweeTelemetryStore, ...]) -> None:
    lite, pg = twins
    assert lite.model.select().count() == pg.model.select().count() == 140


@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda g: "+".join(g) or "totals")
def test_reports_agree_across_backends(
    twins: Tuple[PeeweeTelemetryStore, ...], group_by: Sequence[str]
) -> None:
    lite, pg = twins
    for options in ({}, {"since": NOW - dt.timedelta(days=30)},
                    {"since": YEAR_END[0], "until": YEAR_END[-1], "repo": "acme/web"},
                    {"conclusion": "failure"}):
        left = comparable(lite.report(group_by=group_by, **options))
        right = comparable(pg.report(group_by=group_by, **options))
        assert_same(left, right)
        if group_by and not options:
            assert left["rows"], "a grouping with no rows proves nothing"


def test_iso_weeks_across_the_year_end_agree(twins: Tuple[PeeweeTelemetryStore, ...]) -> None:
    lite, pg = twins
    since, until = YEAR_END[0], YEAR_END[-1] + dt.timedelta(seconds=1)
    weeks = [r.keys["week"] for r in pg.report(group_by="week", since=since, until=until).rows]
    assert weeks == ["2024-W52", "2025-W01", "2025-W02"]
    assert [r.keys["week"] for r in lite.report(group_by="week", since=since,
                                                until=until).rows] == weeks


def test_exports_are_identical(twin_files: TwinFiles) -> None:
    lite_path, pg_url, _ = twin_files
    exported = []
    for location in (lite_path, pg_url):
        database = open_readonly(location)
        try:
            columns, rows = export_rows(database, since=NOW - dt.timedelta(days=40))
            exported.append((columns, list(rows)))
        finally:
            database.close()
    assert exported[0] == exported[1]
    assert len(exported[0][1]) > 40


def test_stats_agree_where_they_mean_the_same(
    twin_files: TwinFiles,
) -> None:
    lite_path, pg_url, twins = twin_files
    stats = []
    for location, shown in ((lite_path, lite_path), (pg_url, twins[1].path)):
        database = open_readonly(location)
        try:
            stats.append(database_stats(database, shown))
        finally:
            database.close()
    lite, pg = stats
    assert (pg.rows, pg.oldest, pg.newest, pg.schema_version) == (
        lite.rows, lite.oldest, lite.newest, lite.schema_version)
    assert pg.oldest == "2024-12-27 23:59:59"
    assert pg.file_bytes > 0 and pg.wal_bytes == 0 and pg.journal_mode == "server"


def test_readonly_opening_cannot_write(twin_files: TwinFiles) -> None:
    import peewee

    pg_url = twin_files[1]
    database = open_readonly(pg_url)
    try:
        with pytest.raises(peewee.DatabaseError, match="read-only"):
            database.execute_sql("DELETE FROM executions")
    finally:
        database.close()


# --- The command line on both ------------------------------------------------------


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    captured = capsys.readouterr()
    return status, out.getvalue() + captured.out, captured.err


def test_cli_report_json_agrees(twin_files: TwinFiles,
                                capsys: pytest.CaptureFixture[str]) -> None:
    documents = []
    for db in twin_files[:2]:
        status, out, err = cli("report", "--db", db, "--format", "json", "--since", "60d",
                               "--by", "week", "--by", "model", capsys=capsys)
        assert (status, err) == (0, "")
        document = json.loads(out)
        document.pop("generated_at")
        documents.append(document)
    lite, pg = documents
    assert lite.keys() == pg.keys()
    assert_same({"keys": 0, "rows": lite["rows"], "totals": lite["totals"]},
                {"keys": 0, "rows": pg["rows"], "totals": pg["totals"]})


def test_cli_export_csv_is_byte_identical(
    twin_files: TwinFiles, capsys: pytest.CaptureFixture[str],
) -> None:
    outputs = []
    for db in twin_files[:2]:
        status, out, err = cli("export", "--db", db, "--format", "csv", capsys=capsys)
        assert (status, err) == (0, "")
        outputs.append(out)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("\n") == 141


def test_cli_purge_counts_agree(pg_url: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    said = []
    lite_path = tmp_path / "twin.db"
    with make_twins(lite_path, pg_url):
        pass
    for db in (str(lite_path), pg_url):
        _, dry, _ = cli("purge", "--db", db, "--days", "45", "--dry-run", capsys=capsys)
        _, done, _ = cli("purge", "--db", db, "--days", "45", capsys=capsys)
        said.append((dry, done))
    assert said[0] == said[1]
    dry, done = said[0]
    deleted = int(done.split()[1])
    assert dry.startswith(f"would delete {deleted} executions") and 0 < deleted < 140
    witness = Witness(pg_url)
    try:
        assert witness.count() == 140 - deleted
    finally:
        witness.close()


def test_cli_stats_and_checkpoint_on_postgresql_never_print_the_password(
    twin_files: TwinFiles, capsys: pytest.CaptureFixture[str],
) -> None:
    pg_url = twin_files[1]
    password = pg_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    status, out, err = cli("stats", "--db", pg_url, capsys=capsys)
    assert (status, err) == (0, "")
    assert "rows" in out and "140" in out and "***" in out
    status, out2, err = cli("checkpoint", "--db", pg_url, capsys=capsys)
    assert (status, err) == (0, "")
    assert "nothing to do" in out2
    assert f":{password}@" not in out + out2


def test_cli_demo_fills_postgresql(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli("demo", "--db", pg_url, "--rows", "300", capsys=capsys)
    assert (status, err) == (0, "")
    assert "wrote 300 demo executions" in out
    witness = Witness(pg_url)
    try:
        assert witness.count() == 300
    finally:
        witness.close()


def test_cli_on_a_missing_table_says_so(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli("report", "--db", pg_url, capsys=capsys)
    assert status == 1
    assert "has no 'executions' table" in err
