"""A report's filters as arguments: their types, the options that carry them
and what they become, for ``telemetry-orm report`` and for the server's
``/usage`` and ``/api/report`` (query parameters read by the same parser,
so that a bad value gets the same message either way)."""

from __future__ import annotations

import argparse
import datetime as _dt
import re
from typing import Any, Dict, Optional, Tuple

from . import clock, formats, report_labels, reports, zones
from .checks import parse_iso, to_utc
from .errors import TelemetryValidationError

__all__ = ["When", "add_report_filters", "group_key", "label_argument", "one_line",
           "parse_when", "report_options", "text_argument", "zone_argument"]

_RELATIVE = re.compile(r"(\d+)([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: Optional[_dt.datetime] = None,
               zone: Any = None) -> _dt.datetime:
    """A point in time from the command line, as an aware UTC datetime.

    ``7d``, ``12h``, ``2w``: that long before ``now`` (default: the pinned
    :mod:`~telemetry_orm.clock`, else this machine's clock; to the second);
    ``YYYY-MM-DD``: that day's midnight in ``zone`` (a ``zoneinfo`` zone;
    default UTC); an ISO 8601 datetime (naive: a wall time in ``zone``).
    Anything else raises ``argparse.ArgumentTypeError``.
    """
    now = (now or clock.pinned_now() or _dt.datetime.now(_dt.timezone.utc)).replace(microsecond=0)
    match = _RELATIVE.fullmatch(text.strip())
    try:
        if match:
            amount, unit = int(match.group(1)), _UNITS[match.group(2)]
            return now - _dt.timedelta(**{unit: amount})
        value = parse_iso(text.strip())
        return zones.wall_to_utc(value, zone) if zone is not None else to_utc(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use 7d, 12h, 2w, YYYY-MM-DD or an ISO datetime"
        ) from None
    except OverflowError:  # before year 1 or after 9999, in UTC
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: times run from year 1 to 9999 (UTC)"
        ) from None


class When(str):
    """A ``--since``/``--until`` value, checked when parsed and read in the
    report's time zone once ``--tz`` is known."""

    def __new__(cls, text: str) -> When:
        parse_when(text)
        return super().__new__(cls, text)

    def at(self, zone: Any) -> _dt.datetime:
        return parse_when(self, zone=zone)


def zone_argument(text: str) -> Any:
    """An IANA zone name (``--tz``, ``--zone``)."""
    try:
        return zones.check_zone("tz", text)
    except TelemetryValidationError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def text_argument(text: str) -> str:
    """A value that must not be empty (``--repo`` and the other filters)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def group_key(text: str) -> str:
    """A ``--by`` key: one of the report's group keys or ``label:NAME``."""
    if text in reports.GROUP_KEYS:
        return text
    try:
        if report_labels.label_name(text) is not None:
            return text
    except TelemetryValidationError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    raise argparse.ArgumentTypeError(
        f"unknown key {text!r}; expected one of {', '.join(reports.GROUP_KEYS)} or label:NAME")


def label_argument(text: str) -> Tuple[str, str]:
    """A ``--label NAME=VALUE`` argument (of ``report`` and ``budget set``),
    read by the report's rules."""
    try:
        return report_labels.parse_label(text)
    except TelemetryValidationError as exc:
        raise argparse.ArgumentTypeError(
            exc.reason if exc.field == "--label" else str(exc)) from None


def add_report_filters(parser: argparse.ArgumentParser) -> None:
    """The options that choose what a report counts and how: ``--since``,
    ``--until``, ``--tz``, ``--repo``, ``--model``, ``--event``,
    ``--conclusion``, ``--by``, ``--label`` and ``--cost``."""
    parser.add_argument("--since", type=When, default=When("30d"), metavar="WHEN",
                        help="from this time on (default 30d): 7d, 12h, 2w, YYYY-MM-DD or an "
                        "ISO datetime (dates and naive times in --tz)")
    parser.add_argument("--until", type=When, metavar="WHEN", help="before this time")
    parser.add_argument("--tz", type=zone_argument, default=zones.UTC, metavar="ZONE",
                        help="IANA time zone of the day, week and month buckets and of the "
                        "dates (default UTC), e.g. America/Los_Angeles")
    parser.add_argument("--repo", type=text_argument, metavar="R",
                        help="only this repository (owner/name)")
    parser.add_argument("--model", type=text_argument, metavar="M", help="only this model")
    parser.add_argument("--event", type=text_argument, metavar="E",
                        help="only this event type")
    parser.add_argument("--conclusion", type=text_argument, metavar="C",
                        help="only this conclusion")
    parser.add_argument("--by", action="append", type=group_key, metavar="KEY",
                        help="group by KEY, repeatable (default repo): "
                        + ", ".join(reports.GROUP_KEYS) + ", or label:NAME (an execution's "
                        "label NAME; (none) without it)")
    parser.add_argument("--label", action="append", type=label_argument, default=[],
                        metavar="NAME=VALUE",
                        help="only executions with this label (repeatable: all of them)")
    parser.add_argument("--cost", choices=reports.COST_MODES, default="recorded",
                        help="recorded (default): cost_usd as stored; calculated: every "
                        "execution's tokens at list prices; auto: recorded where above 0, "
                        "else calculated. Executions without a price show n/a, never $0")


def report_options(args: argparse.Namespace, prices: Any = None) -> Dict[str, Any]:
    """The keyword arguments of :func:`~telemetry_orm.reports.report` (and
    of the dashboard) that ``args`` (parsed with :func:`add_report_filters`)
    give, with ``prices`` (the price table, for ``--cost`` other than
    ``recorded``); ``group_by`` apart."""
    return dict(
        since=args.since.at(args.tz) if args.since else None,
        until=args.until.at(args.tz) if args.until else None, repo=args.repo,
        model=args.model, event_type=args.event, conclusion=args.conclusion,
        cost=args.cost, prices=prices, tz=args.tz,
        labels=report_labels.label_filter("--label", args.label),
    )


def one_line(exc: BaseException) -> str:
    """An error as the one line the command line prints for it."""
    # A failed rollback after the real failure (SQLite rolls back by itself
    # on a full disk, then the rollback asked for finds no transaction):
    # the real failure is the cause to show.
    while "no transaction is active" in str(exc) and exc.__context__ is not None:
        exc = exc.__context__
    # Shown escaped: a message may quote a name from the data or a path.
    if isinstance(exc, OSError) and exc.filename:
        return formats.printable(f"{exc.filename}: {exc.strerror or exc}")
    return formats.printable(" ".join(str(exc).split()) or type(exc).__name__)
