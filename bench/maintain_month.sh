#!/usr/bin/env bash
# Lake maintenance on a tiny month: 31 days of raw logs, 30 days extracted (one Spark pass: the
# same files per partition as 30 daily runs, one per table and day), three days re-extracted (a backfill after a fix: their old files become
# tombstones), then `ple maintain` (compaction + VACUUM). Prints, per table, files per partition
# and bytes before/after. Usage: bench/maintain_month.sh [DATA_DIR] (default /tmp/ple-maintain-month)
set -euo pipefail
DATA=${1:-/tmp/ple-maintain-month}
PLE=${PLE:-.venv/bin/ple}
rm -rf "$DATA"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
time "$PLE" generate --data-dir "$DATA" --start-date 2026-01-01 --days 31 --users 300 --items 150 \
    --impressions-per-day 1000 --files-per-day 2 --seed 5 > /dev/null
time "$PLE" extract --data-dir "$DATA" --start 2026-01-01 --end 2026-01-30 --days-per-pass 30 > /dev/null
time "$PLE" extract --data-dir "$DATA" --start 2026-01-28 --end 2026-01-30 > /dev/null
time "$PLE" maintain --data-dir "$DATA" --retention-hours 0 --no-retention-check
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
