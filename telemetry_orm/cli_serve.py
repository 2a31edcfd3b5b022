"""``telemetry-orm serve``: receive OTLP/HTTP (Claude Code's events, GenAI
spans) into a store, under waitress (:mod:`telemetry_orm.serving`,
:mod:`telemetry_orm.server`).

Without a token (``--token-file FILE`` or ``$TELEMETRY_SERVE_TOKEN``) it
listens on a loopback address only: anywhere else, anyone who reaches the
port could write executions, so it refuses (exit 2, saying why). SIGTERM
or SIGINT stops it: it stops accepting, finishes the requests in flight,
closes the store and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from typing import Any, List, Optional, TextIO

from .errors import TelemetryValidationError
from .store import create_telemetry_store

#: Where the token is read from when no ``--token-file`` is given.
ENV_TOKEN = "TELEMETRY_SERVE_TOKEN"
#: OTLP/HTTP's port.
DEFAULT_PORT = 4318
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (``127.0.0.1``,
    ``::1``, ``localhost`` where it resolves only to those)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in found}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses)


def read_token(args: argparse.Namespace) -> Optional[str]:
    """The token of ``--token-file`` (its first line), else of
    ``$TELEMETRY_SERVE_TOKEN``; ``None`` when neither is given."""
    from .server import check_token

    if args.token_file is not None:
        # Bytes that are no UTF-8 become U+FFFD, refused below as non-ASCII.
        with open(args.token_file, encoding="utf-8", errors="replace") as handle:
            token = handle.readline().strip()
        if not token:
            raise TelemetryValidationError("--token-file", f"{args.token_file} holds no token")
        return check_token(token, "--token-file", f"the token of {args.token_file} ")
    token = os.environ.get(ENV_TOKEN, "").strip()
    return check_token(token, f"${ENV_TOKEN}", "the token ") if token else None


def _stop_on_signals(stop: Any) -> None:
    """SIGTERM and SIGINT call ``stop`` from now on."""
    def handler(signum: int, frame: Any) -> None:
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """``serve``: the OTLP/HTTP intake until SIGTERM or SIGINT."""
    # Imported here: they need the serve extra, which other commands do not.
    from .server import make_app
    from .serving import Serving

    token = read_token(args)
    if token is None and not is_loopback(args.host):
        raise TelemetryValidationError(
            "--host", f"refusing to listen on {args.host} without a token: anyone who reaches "
            f"it could write executions. Give --token-file FILE or set ${ENV_TOKEN} (exports "
            "then send 'Authorization: Bearer <token>'), or listen on 127.0.0.1")
    if not args.debug:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    # A database that does not exist yet is created, as record() would.
    # From here on a signal stops the server: one that comes before the
    # server is made stops it as it starts, more are harmless.
    serving: Any = None
    asked: List[bool] = []  # a signal came before the server was made

    def stop() -> None:
        asked.append(True)
        if serving is not None:
            serving.stop()

    _stop_on_signals(stop)
    with contextlib.closing(create_telemetry_store(args.db)) as store:
        app = make_app(store, token, max_body=args.max_body, max_records=args.max_records,
                       label_attributes=args.label_attribute, max_inflight=args.max_inflight)
        serving = Serving(app, args.host, args.port, threads=app.threads,
                          max_request_body=args.max_body)
        out.write(f"serving OTLP/HTTP on http://{_url_host(serving.host)}:{serving.port} "
                  f"(POST /v1/logs, /v1/traces, /v1/metrics; GET /healthz, /metrics, /usage, "
                  f"/api/report) into {args.db}"
                  f"{'' if token else ' without a token'}\n")
        out.flush()
        if asked:
            serving.stop()
        serving.run()
    # The store is closed: what is left is the process's exit, where Python
    # puts the default handlers back (a signal would then end it with
    # a failure). Ignored, they stay ignored.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    counts = app.counts
    out.write(f"stopped: {counts['recorded']:,} executions accepted (a resent one is stored "
              f"once), {counts['rejected']:,} records refused, in {counts['requests']:,} "
              "requests\n")
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return int(text)


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` to ``commands`` (the CLI's subparsers), with the
    ``common`` options (``--db``, ``--debug``)."""
    text = ("receive OpenTelemetry (OTLP/HTTP) from Claude Code and GenAI-instrumented "
            "clients into the database")
    sub = commands.add_parser("serve", parents=[common], help=text, description=text + (
        f". Without a token (--token-file or ${ENV_TOKEN}) only a loopback --host is "
        "allowed. SIGTERM or SIGINT stops it after the requests in flight."))
    sub.set_defaults(run=cmd_serve, usage=sub.format_usage)
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on "
                     "(default 127.0.0.1)")
    sub.add_argument("--port", type=_port, default=DEFAULT_PORT,
                     help=f"port (default {DEFAULT_PORT}, OTLP/HTTP's; 0: a free one)")
    sub.add_argument("--token-file", metavar="FILE",
                     help=f"a file whose first line is the bearer token exports must send "
                     f"(else ${ENV_TOKEN})")
    sub.add_argument("--max-body", type=_positive, default=DEFAULT_MAX_BODY, metavar="BYTES",
                     help=f"the largest request body, decompressed (default "
                     f"{DEFAULT_MAX_BODY:,}); larger ones get 413")
    sub.add_argument("--max-records", type=_positive, default=DEFAULT_MAX_RECORDS,
                     metavar="N", help=f"the most log records, spans or metrics in one "
                     f"request (default {DEFAULT_MAX_RECORDS:,}); more get 413")
    sub.add_argument("--label-attribute", action="append", default=[],
                     metavar="KEY", help="keep this resource attribute as a label of every "
                     "execution (repeatable), e.g. team from OTEL_RESOURCE_ATTRIBUTES=team=ml")
    sub.add_argument("--max-inflight", type=_positive, default=4, metavar="N",
                     help="requests read, decoded and written at once (default 4); more "
                     "get 503 with Retry-After")
