"""``GET /usage`` (the HTML report, live) and ``GET /api/report`` (what
``telemetry-orm report --format json`` prints), their filters given as
query parameters named as the command line's options: ``since``,
``until``, ``tz``, ``repo``, ``model``, ``event``, ``conclusion``,
``cost``, and ``by`` and ``label`` repeatable. They are read by the command
line's own parser (:mod:`telemetry_orm.report_args`): a bad value is
refused with the message the command line gives for it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import urllib.parse
from typing import Any, Dict, List, NoReturn

from .. import dashboard, formats, prices, report_labels, reports
from ..errors import TelemetryValidationError
from ..report_args import add_report_filters, one_line, report_options

__all__ = ["PARAMETERS", "BadQuery", "api_report", "content_policy", "parse_query",
           "usage_page"]

#: The command the messages name, as the command line prints them.
COMMAND = "telemetry-orm report"

#: The query parameters taken (each the option ``--NAME``).
PARAMETERS = ("since", "until", "tz", "repo", "model", "event", "conclusion", "by", "label",
              "cost")


class BadQuery(Exception):
    """A query the report cannot be made from: its message is the line
    ``telemetry-orm report`` prints for the same options."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BadQuery(f"{COMMAND}: error: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=COMMAND, add_help=False, allow_abbrev=False)
    add_report_filters(parser)
    return parser


def parse_query(query: str) -> argparse.Namespace:
    """The report's options from a query string (``since=7d&by=model&by=day``).

    Each ``name=value`` is read as ``--name=value`` would be on the command
    line; a name that is not one of :data:`PARAMETERS` is refused as the
    command line refuses an option it does not know."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                                       errors="strict", max_num_fields=200)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadQuery(f"{COMMAND}: error: the query string cannot be read: "
                       f"{formats.printable(str(exc))}") from None
    unknown = [f"--{name}={value}" for name, value in pairs if name not in PARAMETERS]
    if unknown:
        raise BadQuery(f"{COMMAND}: error: unrecognized arguments: "
                       f"{formats.printable(' '.join(unknown))}")
    return _parser().parse_args([f"--{name}={value}" for name, value in pairs])


def _made(store: Any, query: str, html: bool) -> Any:
    args = parse_query(query)
    table = prices.prices_with(None) if args.cost != "recorded" else None
    group_by = args.by or ["repo"]
    try:
        options = report_options(args, table)
        with store.reading() as database:
            report_labels.check_known(database, group_by, options["labels"] or {})
            if html:
                return dashboard.dashboard(database, group_by=group_by, **options)
            return reports.report(database, group_by=group_by, **options)
    except TelemetryValidationError as exc:
        raise BadQuery(f"{COMMAND}: error: {one_line(exc)}") from None


def usage_page(store: Any, query: str = "") -> str:
    """The HTML report of ``store`` for the filters of ``query`` (as
    ``telemetry-orm report --format html`` draws it); :class:`BadQuery`
    for bad filters."""
    return dashboard.render_html(_made(store, query, html=True))


def api_report(store: Any, query: str = "") -> str:
    """The report of ``store`` for the filters of ``query`` as JSON (as
    ``telemetry-orm report --format json`` prints it); :class:`BadQuery`
    for bad filters."""
    return formats.render_report(_made(store, query, html=False), "json")


_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def content_policy(page: str) -> str:
    """A Content-Security-Policy that lets ``page`` run its own inline
    script and style (by their SHA-256) and nothing else: no other script,
    no request to anywhere, no frame."""
    found: Dict[str, List[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
        found[kind].append(f"'sha256-{digest}'")
    none = "'none'"
    return ("default-src 'none'; "
            f"script-src {' '.join(found['script']) or none}; "
            f"style-src {' '.join(found['style']) or none}; "
            "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

