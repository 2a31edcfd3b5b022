"""``python -m telemetry_orm``: the ``telemetry-orm`` command line."""

from .cli import main

raise SystemExit(main())
