// The peer measurement: the same inserts through bun:sqlite, the original
// store's runtime. Run by bench/peer.py as
//   bun bench/bun_inserts.js DB ROWS_JSON ROUNDS
// ROWS_JSON holds the rows as arrays in column order. Prints one JSON line:
// median microseconds per row, one row per statement (autocommit) and
// 1,000 rows per transaction.
import { Database } from "bun:sqlite";
import { readFileSync } from "node:fs";

const [dbPath, rowsPath, roundsArg] = process.argv.slice(2);
const rounds = Number(roundsArg);
const rows = JSON.parse(readFileSync(rowsPath, "utf8"));
const columns = [
  "delivery_id", "repo", "pr_number", "event_type", "provider", "model",
  "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
  "duration_ms", "cost_usd", "conclusion", "session_id", "num_turns", "stop_reason",
];

const db = new Database(dbPath, { create: true });
db.exec("PRAGMA journal_mode = WAL");
db.exec("PRAGMA busy_timeout = 5000");
db.exec("PRAGMA synchronous = NORMAL");
db.exec("PRAGMA journal_size_limit = 67108864");
const insert = db.query(
  `INSERT INTO executions (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`,
);
const inTransaction = db.transaction((batch) => {
  for (const row of batch) insert.run(...row);
});

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function perRow() {
  const start = performance.now();
  for (const row of rows) insert.run(...row);
  return ((performance.now() - start) * 1000) / rows.length;
}

function batched() {
  const start = performance.now();
  for (let i = 0; i < rows.length; i += 1000) inTransaction.immediate(rows.slice(i, i + 1000));
  return ((performance.now() - start) * 1000) / rows.length;
}

perRow();
batched();
const single = [];
const batch = [];
for (let i = 0; i < rounds; i++) {
  single.push(perRow());
  batch.push(batched());
}
db.close();
console.log(JSON.stringify({ per_row_us: median(single), batch_us: median(batch) }));
