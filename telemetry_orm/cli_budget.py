"""``telemetry-orm budget set|list|delete|check``: budgets from the command
line (see :mod:`telemetry_orm.budgets`).

``budget check`` exits 0 when every budget is ``ok``, 3 when one is in
``warning``, 4 when one is ``exceeded``, and 5 when an alert could not be
delivered (``--notify``; it is tried again at the next check). Bad input
exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any, TextIO

from . import formats, report_labels
from .budgets import PERIODS, BudgetStatus
from .engines import backend_for
from .errors import DatabaseError
from .report_args import label_argument
from .store import create_telemetry_store

#: ``budget check``'s exit status by the worst status met.
EXIT = {"ok": 0, "warning": 3, "exceeded": 4}
#: ``budget check --notify``: an alert could not be delivered.
EXIT_UNDELIVERED = 5


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _store(args: argparse.Namespace) -> Any:
    why = backend_for(args.db).missing()
    if why:
        raise DatabaseError(f"{args.db}: {why} (give --db PATH or set $TELEMETRY_DB_PATH)")
    return contextlib.closing(create_telemetry_store(args.db))


def cmd_set(args: argparse.Namespace, out: TextIO) -> int:
    """``budget set``: store a budget (replacing one of that name)."""
    labels = report_labels.label_filter("--label", args.label)
    with _store(args) as store:
        budget = store.set_budget(args.name, usd=args.usd, period=args.period, tz=args.tz,
                                  repo=args.repo, model=args.model, labels=labels,
                                  warn_at=args.warn_at)
    out.write(f"budget {budget.name}: ${budget.usd:,.2f} per {budget.period} ({budget.tz})\n")
    return 0


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    """``budget list``: the stored budgets."""
    with _store(args) as store:
        found = store.budgets()
    if args.format == "json":
        out.write(json.dumps([b.as_dict() for b in found], indent=2) + "\n")
        return 0
    if not found:
        out.write("no budgets (add one with: telemetry-orm budget set NAME --usd N)\n")
    for b in found:
        scope = ", ".join(f"{k}={v}" for k, v in (("repo", b.repo), ("model", b.model),
                                                  *sorted(b.labels.items())) if v) or "all"
        out.write(formats.printable(
            f"{b.name}: ${b.usd:,.2f} per {b.period} ({b.tz}), warn at {b.warn_at:.0%}; "
            f"{scope}") + "\n")
    return 0


def cmd_delete(args: argparse.Namespace, out: TextIO) -> int:
    """``budget delete``: forget a budget."""
    with _store(args) as store:
        store.delete_budget(args.name)
    out.write(f"deleted budget {args.name}\n")
    return 0


def _line(s: BudgetStatus) -> str:
    share = "n/a" if s.share == float("inf") else f"{s.share:.0%}"
    text = (f"{s.budget.name}: {s.status.upper()} ${s.spent_usd:,.2f} of ${s.limit_usd:,.2f} "
            f"({share}) this {s.budget.period} {s.period_start:%Y-%m-%d %H:%M} to "
            f"{s.period_end:%Y-%m-%d %H:%M} UTC; projected ${s.projected_usd:,.2f}")
    if s.unknown:
        models = ", ".join(f"{m} ({n})" for m, n in sorted(s.unpriced.items()))
        text += f"; cost unknown for {s.unknown} executions: {models}"
    return formats.printable(text)


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """``budget check``: each budget's status; exit 0, 3 or 4 (5: an alert
    was not delivered)."""
    with _store(args) as store:
        statuses = store.budget_statuses(args.names or None)
        tried = (store.notify_budgets(args.notify, statuses, timeout=args.timeout)
                 if args.notify else [])
    if args.format == "json":
        out.write(json.dumps([s.as_dict() for s in statuses], indent=2) + "\n")
    else:
        if not statuses:
            out.write("no budgets (add one with: telemetry-orm budget set NAME --usd N)\n")
        for s in statuses:
            out.write(_line(s) + "\n")
    failed = [t for t in tried if t.error is not None]
    for t in failed:
        print(formats.printable(f"telemetry-orm budget check: alert for {t.budget} "
                                f"({t.threshold}) not delivered, retried at the next check: "
                                f"{t.error}"), file=sys.stderr)
    if failed:
        return EXIT_UNDELIVERED
    return max((EXIT[s.status] for s in statuses), default=0)


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``budget`` and its subcommands to ``commands`` (the CLI's
    subparsers), each with the ``common`` options (``--db``, ``--debug``)."""
    text = "budgets: a limit per day, week or month, their status and alerts"
    budget = commands.add_parser("budget", help=text, description=text)
    subs = budget.add_subparsers(dest="budget_command", metavar="SUBCOMMAND", required=True)

    def sub(name: str, run: Any, help_text: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = subs.add_parser(
            name, parents=[common], help=help_text, description=help_text)
        made.set_defaults(run=run, usage=made.format_usage)
        return made

    made = sub("set", cmd_set, "store a budget (replacing one of that name)")
    made.add_argument("name", metavar="NAME")
    made.add_argument("--usd", type=_number, required=True, metavar="N",
                      help="the limit in dollars per period")
    made.add_argument("--period", choices=PERIODS, default="month",
                      help="day, week (from Monday) or month (default)")
    made.add_argument("--tz", default="UTC", metavar="ZONE",
                      help="IANA zone where periods start at midnight (default UTC)")
    made.add_argument("--repo", metavar="R", help="only this repository's executions")
    made.add_argument("--model", metavar="M", help="only this model's executions")
    made.add_argument("--label", type=label_argument, action="append", default=[], metavar="K=V",
                      help="only executions carrying this label (repeatable)")
    made.add_argument("--warn-at", type=_number, default=0.8, metavar="SHARE",
                      help="share of the limit from which it is a warning (default 0.8)")
    made = sub("list", cmd_list, "the stored budgets")
    made.add_argument("--format", choices=("table", "json"), default="table")
    made = sub("delete", cmd_delete, "delete a budget")
    made.add_argument("name", metavar="NAME")
    made = sub("check", cmd_check, "each budget's status in its current period; exit 0 ok, "
               "3 warning, 4 exceeded, 5 an alert not delivered")
    made.add_argument("names", nargs="*", metavar="NAME", help="these budgets (default all)")
    made.add_argument("--format", choices=("table", "json"), default="table")
    made.add_argument("--notify", metavar="URL",
                      help="POST a JSON alert (Slack-compatible 'text') for each budget "
                      "that reached warning or exceeded, once per threshold and period")
    made.add_argument("--timeout", type=_number, default=10.0, metavar="SECONDS",
                      help=argparse.SUPPRESS)
