"""Helpers shared by the tests: the original store's DDL and sample entries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: The original store's DDL, as its plan states it (with the parentheses
#: SQLite needs around an expression default).
SEED_DDL = """
CREATE TABLE IF NOT EXISTS executions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  delivery_id TEXT,
  repo TEXT NOT NULL,
  pr_number INTEGER,
  event_type TEXT NOT NULL,
  provider TEXT NOT NULL DEFAULT 'anthropic',
  model TEXT NOT NULL,
  input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  cache_read_tokens INTEGER NOT NULL DEFAULT 0,
  cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
  duration_ms INTEGER NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0,
  conclusion TEXT NOT NULL,
  session_id TEXT,
  num_turns INTEGER,
  stop_reason TEXT
);
CREATE INDEX IF NOT EXISTS idx_executions_created_at ON executions(created_at);
CREATE INDEX IF NOT EXISTS idx_executions_repo ON executions(repo);
"""


def make_seed_database(path: Path, rows: int = 0) -> None:
    """Write a database as the original TypeScript store leaves it: WAL,
    user_version 0, its DDL, and ``rows`` rows inserted with its INSERT."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SEED_DDL)
    for i in range(rows):
        conn.execute(
            "INSERT INTO executions (delivery_id, repo, pr_number, event_type, provider, model,"
            " input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
            " duration_ms, cost_usd, conclusion, session_id, num_turns, stop_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"d-{i}", "acme/api", i + 1, "pull_request.opened", "anthropic",
             "claude-sonnet-4-5", 100 + i, 50, 10, 5, 1200, 0.0123, "success",
             f"s-{i}", 3, "end_turn"),
        )
    conn.commit()
    conn.close()


def minimal(**overrides: object) -> dict:
    """A mapping with only the required fields."""
    entry: dict = {
        "repo": "acme/api",
        "event_type": "pull_request.opened",
        "model": "claude-sonnet-4-5",
        "conclusion": "success",
    }
    entry.update(overrides)
    return entry
