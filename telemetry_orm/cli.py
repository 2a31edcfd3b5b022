"""The ``telemetry-orm`` command line: argument parsing around library calls.

Every command but ``migrate`` takes ``--db PATH`` (a file or a database URL
such as ``postgresql://user:password@host/db`` or ``mysql://…``; default ``$TELEMETRY_DB_PATH``,
else ``./data/telemetry.db``); ``migrate`` takes ``--from`` and ``--to``.
Exit status: 0 on success, 1 when the work failed (one line on stderr;
``--debug`` shows the traceback), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import logging
import os
import shutil
import stat
import sys
import tempfile
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from . import (
    cli_budget,
    cli_serve,
    dashboard,
    demo,
    formats,
    imports,
    prices,
    report_labels,
    reports,
)
from .checks import parse_amount, parse_count, same_file
from .engines import backend_for
from .errors import DatabaseError, TelemetryValidationError
from .report_args import (
    When,  # noqa: F401  (the CLI's names, as before)
    add_report_filters,
    one_line,
    parse_when,
    report_options,
    zone_argument,
)
from .store import KEY_DAYS, LOGGER_NAME, create_telemetry_store
from .transfer import ImportProgress, MigrationProgress, import_files, migrate

PROG = "telemetry-orm"
DEFAULT_DB = os.path.join(".", "data", "telemetry.db")
ENV_DB = "TELEMETRY_DB_PATH"

Command = Callable[[argparse.Namespace, TextIO], int]


# --- Argument types -------------------------------------------------------------


def _days(text: str) -> float:
    value = parse_amount(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days >= 0")
    return value


#: Largest --batch-size and --rows: far beyond any useful value, well inside
#: what the engines bind as an integer.
MAX_OPTION_COUNT = 10_000_000


def _count(text: str) -> int:
    value = parse_count(text, 1, MAX_OPTION_COUNT)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 1 to {MAX_OPTION_COUNT:,}")
    return value


class UsageError(Exception):
    """A command line that cannot be carried out as given: exit 2."""


# --- Commands ------------------------------------------------------------------


@contextlib.contextmanager
def _reading(path: str) -> Iterator[Any]:
    # Read-only: report, stats, export and dry runs never change a byte.
    database = reports.open_readonly(path)
    try:
        yield database
    finally:
        database.close()


def _existing(path: str) -> str:
    # Checked before anything opens the path, so a typo creates nothing. A
    # server URL is checked by connecting (and a store never creates the
    # server's database).
    why = backend_for(path).missing()
    if why:
        raise DatabaseError(f"{path}: {why} (give --db PATH or set {ENV_DB})")
    return path


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    """``report``: aggregate executions (as a page with ``--format html``)."""
    if args.out is not None:
        _not_the_database(args.out, args.db, "--out")
    if args.out is not None and args.format != "html":
        raise UsageError("--out is for --format html; redirect other formats")
    if args.chart and args.format != "table":
        raise UsageError("--chart draws under the table: use it with --format table")
    table = prices.prices_with(args.prices) if args.cost != "recorded" else None
    options = report_options(args, table)
    with _reading(_existing(args.db)) as database:
        report_labels.check_known(database, args.by or [], options["labels"] or {})
        if args.format == "html" or args.chart:
            page = dashboard.dashboard(database, group_by=args.by or ["repo"], **options)
            result = page.report
        else:
            result = reports.report(database, group_by=args.by or ["repo"], **options)
        if not result.totals.executions:
            _hint_filters(database, options)
    if args.format != "html":
        width, encoding = _width(out), getattr(out, "encoding", None)
        out.write(formats.render_report(result, args.format, width=width, encoding=encoding))
        if args.chart:
            out.write("\n" + dashboard.terminal_chart(page, width or 100, encoding))
        return 0
    document = dashboard.render_html(page)
    if args.out is None:
        out.write(document)
    else:
        with _output(args.out) as handle:
            handle.write(document)
    return 0


def _width(out: TextIO) -> Optional[int]:
    """The columns a table may take: ``$COLUMNS`` when set, else the
    terminal's width when ``out`` is one; ``None`` (as wide as the table
    needs) for a file or a pipe, so that nothing is left out there."""
    columns = parse_count(os.environ.get("COLUMNS", ""), 1)
    if columns is not None:
        return columns
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return shutil.get_terminal_size().columns
    return None


#: The report filters a hint can name values of: option, report keyword.
_FILTERS = (("repo", "repo"), ("model", "model"), ("event", "event_type"),
            ("conclusion", "conclusion"))


def _hint_filters(database: Any, options: Dict[str, Any]) -> None:
    """On stderr, for each filter value with no executions in the report's
    range: the values there are (a typo gives an empty report, not an error)."""
    labels = options["labels"] or {}
    checks: List[Tuple[str, str, Any, Dict[str, Any]]] = [
        (f"--{option} ", key, options[key], {key: None}) for option, key in _FILTERS]
    checks += [(f"--label {name}=", f"label:{name}", value,
                {"labels": {n: v for n, v in labels.items() if n != name} or None})
               for name, value in labels.items()]
    for option, key, value, without in checks:
        if value is None:
            continue
        others = reports.report(database, group_by=[key], p95=False,
                                **{**options, **without, "cost": "recorded", "prices": None})
        found = [str(row.keys[key]) for row in others.rows if row.keys[key] is not None]
        if value in found:
            continue  # the value is there; the filters together match nothing
        if not found:
            print(f"{PROG} report: there are no executions in this range at all",
                  file=sys.stderr)
            return
        close = difflib.get_close_matches(value, found, n=1)
        shown = [formats.printable(name) for name in sorted(found)[:20]]
        there = ", ".join(shown) + (", …" if len(found) > 20 else "")
        print(f"{PROG} report: no executions with {option}{value!r} in this range; "
              + (f"did you mean {close[0]!r}? " if close else "")
              + f"the {key} values there: {there}", file=sys.stderr)
        return


def cmd_purge(args: argparse.Namespace, out: TextIO) -> int:
    """``purge``: delete (or count) rows older than ``--days``."""
    if args.dry_run:
        # Read-only: a dry run never creates, upgrades or switches a file.
        with _reading(_existing(args.db)) as database:
            count = reports.count_older_than(database, args.days)
        out.write(f"would delete {count:,} executions older than {args.days:g} days\n")
        return 0
    with contextlib.closing(create_telemetry_store(_existing(args.db))) as store:
        count = store.purge(args.days, key_days=args.key_days).deleted
    out.write(f"deleted {count:,} executions older than {args.days:g} days\n")
    return 0


def cmd_rollup(args: argparse.Namespace, out: TextIO) -> int:
    """``rollup``: fold complete hours into the rollups."""
    with contextlib.closing(create_telemetry_store(_existing(args.db))) as store:
        result = store.rollup(zones=args.zone, forget_zones=args.forget_zone)
    when = result.counted_before.strftime("%Y-%m-%d %H:%M UTC") if result.counted_before else "-"
    out.write(f"rolled up {result.rows:,} executions in {result.steps} steps "
              f"({result.seconds:.1f} s); counted before {when}\n")
    if result.zones:
        out.write(f"days kept in {', '.join(result.zones)}\n")
    return 0


def cmd_checkpoint(args: argparse.Namespace, out: TextIO) -> int:
    """``checkpoint``: copy the write-ahead log into the database file."""
    with contextlib.closing(create_telemetry_store(_existing(args.db))) as store:
        result = store.checkpoint(truncate=args.truncate)
        if not result.applies:
            out.write(f"checkpoint: nothing to do on {store.path} (the server manages its log)\n")
            return 0
    mode = "TRUNCATE" if args.truncate else "PASSIVE"
    wal = result.log_file
    size = os.path.getsize(wal) if wal and os.path.exists(wal) else 0
    where = f"; {wal} is {size:,} bytes" if wal else ""
    if args.truncate and not result.emptied:
        raise DatabaseError(
            f"checkpoint ({mode}): a reader kept the log from being truncated (copied "
            f"{max(result.copied, 0)} of {max(result.logged, 0)} pages){where}; "
            "try again once it has finished"
        )
    out.write(f"checkpoint ({mode}) done{where}\n")
    return 0


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    """``stats``: what the database holds."""
    with _reading(_existing(args.db)) as database:
        stats = reports.database_stats(database, backend_for(args.db).path)
    out.write(formats.render_stats(stats, args.format))
    return 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    """``export``: stream every column of the matching rows."""
    if args.out is not None:
        _not_the_database(args.out, args.db, "--out")
    with _reading(_existing(args.db)) as database:
        columns, rows = reports.export_rows(database, since=args.since, until=args.until)
        # Closed here, inside the read: a reader that went away (| head)
        # must not leave the cursor to be closed after the database.
        with contextlib.closing(rows):
            if args.out is None:
                formats.write_export(columns, rows, args.format, out)
            else:
                with _output(args.out) as handle:
                    formats.write_export(columns, rows, args.format, handle)
    return 0


def _not_the_database(path: str, location: str, option: str) -> None:
    """Refuse an output path that is the database or one of its files, by
    any spelling (relative, symlink, hard link, URL)."""
    for name in backend_for(location).files():
        if same_file(path, name):
            raise UsageError(f"{option} {path} is the database file {name}; "
                             "give another file")


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """``demo``: fill a database with realistic records, then report on it."""
    # Checked by reading first: a refused database is left as it was.
    existing = demo.demo_rows(args.db, append=args.append)
    with contextlib.closing(create_telemetry_store(args.db)) as store:
        written = demo.fill(store, rows=args.rows, seed=existing)
        where = store.path
    out.write(f"wrote {written:,} demo executions over the last {demo.DAYS} days to {where}\n\n")
    with _reading(args.db) as database:
        result = reports.report(database, since=parse_when("30d"), group_by=["repo"])
    out.write(formats.render_report(result, "table", width=_width(out),
                                    encoding=getattr(out, "encoding", None)))
    db = "" if args.db == DEFAULT_DB else f" --db {where}"
    out.write(f"\nnext: {PROG} report{db} --by week --by model\n")
    return 0


def cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    """``migrate``: copy a SQLite file's executions into another store."""
    line = ProgressLine(sys.stderr)
    try:
        result = migrate(args.source, args.target, batch_size=args.batch_size,
                         source_name=args.source_name, progress=line)
    finally:
        line.finish()
    out.write(result.summary() + "\n")
    return 0


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    """``import``: executions from exports or Claude Code transcripts."""
    paths = args.paths or ([str(imports.default_transcripts())]
                           if args.format == "claude-code" else [])
    if not paths:
        raise UsageError(f"{args.format}: give the files or folders to import")
    line = ImportProgressLine(sys.stderr)
    try:
        result = import_files(args.format, paths, args.db, batch_size=args.batch_size,
                              progress=line, prices=prices.prices_with(args.prices))
    finally:
        line.finish()
    out.write(result.summary() + "\n")
    if result.files == 0 or (result.lines == 0 and result.skipped_count):
        print(f"{PROG} import: error: nothing could be read from "
              f"{formats.printable(', '.join(paths))}", file=sys.stderr)
        return 1
    if result.skipped_count:
        # The rest is in, but not everything: a script must notice.
        print(f"{PROG} import: error: {result.skipped_count:,} skipped (listed above); "
              "the rest was imported", file=sys.stderr)
        return 1
    return 0


def cmd_prices(args: argparse.Namespace, out: TextIO) -> int:
    """``prices``: the price table in use, and the database's unpriced models."""
    table = prices.prices_with(args.prices)
    unpriced = None
    if args.db is not None:
        with _reading(_existing(args.db)) as database:
            unpriced = reports.unpriced_models(database, table)
    out.write(formats.render_prices(table, unpriced, args.format))
    return 0


class _Line:
    """One line kept up to date on a stream (stderr by default);
    ``terminal_only``: written only when the stream is a terminal."""

    def __init__(self, stream: Optional[TextIO] = None, *, terminal_only: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.shown = False
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = not terminal_only or bool(isatty and isatty())

    def show(self, text: str) -> None:
        """Replace the line with ``text``."""
        if self.enabled:
            self.stream.write(f"\r{text}")
            self.stream.flush()
            self.shown = True

    def finish(self) -> None:
        """End the line (call once the work is over)."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


class ProgressLine(_Line):
    """A ``progress`` callback of ``migrate``:
    ``migrate: 42,000 / 100,000 rows (42%) …``."""

    def __call__(self, progress: MigrationProgress) -> None:
        percent = 100 * progress.done // progress.total if progress.total else 100
        self.show(f"migrate: {progress.done:,} / {progress.total:,} rows ({percent}%), "
                  f"copied {progress.copied:,}, skipped {progress.skipped:,}")


class ImportProgressLine(_Line):
    """The progress line of ``import``, on stderr when it is a terminal:
    ``import: 12 files, 48,000 lines, 310 rows``."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream, terminal_only=True)

    def __call__(self, progress: ImportProgress) -> None:
        self.show(f"import: {progress.files:,} files, {progress.lines:,} lines, "
                  f"{progress.rows:,} rows")


@contextlib.contextmanager
def _output(path: str) -> Iterator[TextIO]:
    """Write ``path``: a regular file (new or existing) through a temporary
    file beside it, renamed into place, so a failed export leaves no
    half-written file; a symlink is followed; a FIFO or a device is written
    to as it is. A new file gets the usual mode (0666 less the umask), an
    existing one keeps its own."""
    target = os.path.realpath(path)
    try:
        mode: Optional[int] = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(target, "w", newline="", encoding="utf-8") as handle:
            yield handle
        return
    # Errors name the path asked for (and where a link leads), never the
    # temporary file, which the user did not ask for and which is gone.
    shown = path if target == os.path.abspath(path) else f"{path} (a link to {target})"
    folder = os.path.dirname(target)
    try:
        fd, temporary = tempfile.mkstemp(prefix=".export-", dir=folder)
    except OSError as exc:
        why = f"no such folder {folder}" if exc.errno == errno.ENOENT else exc.strerror
        raise OSError(exc.errno, why, shown) from None
    try:
        os.chmod(temporary, stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            yield handle
        try:
            os.replace(temporary, target)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, shown) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- Parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", metavar="PATH", default=os.environ.get(ENV_DB) or DEFAULT_DB,
        help=f"database file or URL, e.g. postgresql://user:password@host/db or "
        f"mysql://user:password@host/db "
        f"(default: ${ENV_DB}, else {DEFAULT_DB})",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Report on, export and maintain the telemetry of LLM agent runs.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    when = "7d, 12h, 2w, YYYY-MM-DD or an ISO datetime (UTC)"
    prices_help = (f"a price file (ours, or LiteLLM's model_prices_and_context_window.json) "
                   f"whose entries override the shipped prices (also ${prices.ENV_PRICES})")

    def command(name: str, run: Command, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(run=run, usage=sub.format_usage)
        return sub

    sub = command("report", cmd_report, "usage report: executions, tokens, cost, duration")
    add_report_filters(sub)
    sub.add_argument("--format", choices=(*formats.REPORT_FORMATS, "html"), default="table",
                     help="html: a self-contained page (charts, the table) for a browser")
    sub.add_argument("--out", metavar="FILE", help="write the html page to FILE")
    sub.add_argument("--chart", action="store_true",
                     help="draw cost per day (or week) under the table")
    sub.add_argument("--prices", metavar="FILE", help=prices_help)

    sub = command("purge", cmd_purge, "delete executions older than N days")
    sub.add_argument("--days", type=_days, required=True, metavar="N")
    sub.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    sub.add_argument("--key-days", type=_days, default=KEY_DAYS, metavar="N",
                     help="days the keys of purged executions are kept, so that sending or "
                          f"importing them again counts nothing twice (default {KEY_DAYS})")

    sub = command("rollup", cmd_rollup,
                  "fold complete hours into the rollups, which outlive purges")
    sub.add_argument("--zone", type=zone_argument, action="append", default=[], metavar="ZONE",
                     help="also keep the days of this IANA time zone (repeatable; "
                     "remembered): reports by day or week in it read days, not hours")
    sub.add_argument("--forget-zone", type=zone_argument, action="append", default=[],
                     metavar="ZONE", help="stop keeping the days of this zone")

    sub = command("checkpoint", cmd_checkpoint, "copy the write-ahead log into the database")
    sub.add_argument("--truncate", action="store_true", help="also empty the -wal file")

    sub = command("stats", cmd_stats, "rows, time span, file sizes, schema version")
    sub.add_argument("--format", choices=formats.STATS_FORMATS, default="table")

    sub = command("export", cmd_export, "every column of every matching row")
    sub.add_argument("--format", choices=formats.EXPORT_FORMATS, default="csv")
    sub.add_argument("--since", type=parse_when, metavar="WHEN", help=f"from: {when}")
    sub.add_argument("--until", type=parse_when, metavar="WHEN", help="before this time")
    sub.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")

    sub = command("demo", cmd_demo, "fill a database with realistic demo data, then report")
    sub.add_argument("--rows", type=_count, default=5000, metavar="N",
                     help="how many executions (default 5000)")
    sub.add_argument("--append", action="store_true",
                     help="add to the demo data already there (without it, a database "
                     "holding demo data is refused: a second run would double every figure)")
    sub = command("import", cmd_import,
                  "executions from telemetry-orm export files or Claude Code transcripts")
    sub.add_argument("format", choices=imports.IMPORT_FORMATS, metavar="FORMAT",
                     help="jsonl or csv (files telemetry-orm export wrote), or claude-code")
    sub.add_argument("paths", nargs="*", metavar="PATH",
                     help="files, or folders searched for them (claude-code default: "
                     "$CLAUDE_CONFIG_DIR/projects, else ~/.claude/projects)")
    sub.add_argument("--batch-size", type=_count, default=1000, metavar="N",
                     help="executions per transaction (default 1000)")
    sub.add_argument("--prices", metavar="FILE", help=prices_help)

    sub = commands.add_parser(
        "prices", help="the price table in use, and a database's unpriced models",
        description="List the price table in use (the shipped one, with $TELEMETRY_PRICES's "
        "and --prices's entries over it), per million tokens; with --db, also the models of "
        "that database that have no price, with their executions.",
    )
    sub.set_defaults(run=cmd_prices, usage=sub.format_usage)
    sub.add_argument("--db", metavar="PATH", default=None,
                     help="also list this database's models that have no price")
    sub.add_argument("--format", choices=formats.STATS_FORMATS, default="table")
    sub.add_argument("--prices", metavar="FILE", help=prices_help)
    sub.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")

    sub = commands.add_parser(
        "migrate", help="copy every execution of a SQLite file into another store",
        description="Copy every execution of a SQLite file (also one written by the original "
        "TypeScript store) into another store, usually PostgreSQL, in batches, with a "
        "progress line on stderr. Rows copied before are skipped, so it can run again.",
    )
    sub.set_defaults(run=cmd_migrate, usage=sub.format_usage)
    sub.add_argument("--from", dest="source", required=True, metavar="SRC",
                     help="the SQLite file (path or sqlite:///path); opened read-only")
    sub.add_argument("--to", dest="target", required=True, metavar="DST",
                     help="the target: a path, or a database URL "
                     "(postgresql://user:password@host/db, mysql://…)")
    sub.add_argument("--batch-size", type=_count, default=1000, metavar="N",
                     help="rows per batch and transaction (default 1000)")
    sub.add_argument("--source-name", metavar="NAME",
                     help="name the copied rows are tracked under (default: SRC's absolute "
                     "path); give another one for a different file at the same path")
    sub.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    cli_budget.add_commands(commands, common)
    cli_serve.add_command(commands, common)
    return parser


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return
    the exit status. Output goes to ``out`` (default ``sys.stdout``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return exc.code if isinstance(exc.code, int) else 2
    out = out or sys.stdout
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG)
    try:
        status: int = args.run(args, out)
        out.flush()
        return status
    except BrokenPipeError:
        # The reader went away (``| head``): it had what it wanted, so stop
        # quietly and successfully, whichever command it was.
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    except (UsageError, TelemetryValidationError) as exc:
        # What the command was given cannot be done: a usage error.
        sys.stderr.write(args.usage())
        print(f"{PROG} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
