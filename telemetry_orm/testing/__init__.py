"""Test and demo helpers (the ``testing`` extra): factory-boy factories of
records and rows (:mod:`.factories`), the pytest plugin's fixtures
(:mod:`.plugin`) and the demo data behind ``telemetry-orm demo`` (:mod:`.demo`).
Importing this package needs nothing but telemetry_orm; its modules say
which extra they need."""
