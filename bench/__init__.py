"""Benchmarks of telemetry_orm against raw ``sqlite3``, measured in the same run.

Run ``python -m bench`` (or ``python bench/run.py``) from the project root;
``--quick`` for a short run. See :mod:`bench.run`.
"""
