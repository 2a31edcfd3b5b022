"""Test helpers (the ``testing`` extra): factory-boy factories of
records and rows (:mod:`.factories`), the pytest plugin's fixtures
(:mod:`.plugin`); :mod:`.demo` still imports the demo, which now lives in
:mod:`telemetry_orm.demo` and needs no extra.
Importing this package needs nothing but telemetry_orm; its modules say
which extra they need."""
