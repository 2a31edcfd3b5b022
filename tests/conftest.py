"""Shared fixtures: stores on temporary files, and a plain sqlite3 witness."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "telemetry.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[PeeweeTelemetryStore]:
    s = create_telemetry_store(db_path)
    yield s
    s.close()


@pytest.fixture
def witness(db_path: Path, store: PeeweeTelemetryStore) -> Iterator[sqlite3.Connection]:
    """An independent sqlite3 connection to the store's file."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    yield conn
    conn.close()
