"""The DuckDB lower bound of `bench/etl_throughput.py`: one day's CORE extract work in SQL.

Parse every line (all fields as strings), validate (the same reasons, in the same order),
orphan and unknown-item checks, dedup by event_id, the day's impressions, the 6 h
attribution join, labels, item/user dimensions; the labelled impressions are written to
Parquet. No history features, no vocabularies, no Delta, no neighbour partitions: less
work than `ple extract` does, on the same files, so the time is a lower bound for it.

The counts it returns (lines, accepted, quarantined, duplicates, examples, label sums)
are those of the extract on the same day (no neighbours, first day): the benchmark prints
both, an independent check of the extract by another engine.
"""

from __future__ import annotations

import time
from pathlib import Path

INTEGER = r"-?[0-9]{1,18}"
ISO = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*"


def _sql(events: str, items: str, users: str, day: str, out: str, window_hours: float,
         max_late_hours: float, max_early_minutes: float, max_watch_ms: int) -> list[str]:
    fields = ["event_id", "event_type", "ts", "user_id", "item_id", "impression_id", "position", "device",
              "watch_ms", "channel", "comment_len"]
    paths = ", ".join(f"'$.{f}'" for f in fields)
    f = {name: f"nullif(trim(f[{i + 1}]), '')" for i, name in enumerate(fields)}
    common = ("event_id", "event_type", "ts", "user_id", "item_id")
    by_type = {"impression": ("impression_id", "position", "device"), "play": ("impression_id", "watch_ms"),
               "share": ("impression_id", "channel"), "comment": ("impression_id", "comment_len")}
    integer = {"impression": "position", "play": "watch_ms", "comment": "comment_len"}
    checks = ["WHEN trim(value) = '' THEN 'empty_line'",
              "WHEN f IS NULL OR NOT starts_with(ltrim(value), '{') THEN 'malformed_json'"]
    checks += [f"WHEN {name} IS NULL THEN 'missing_field:{name}'" for name in common]
    checks.append("WHEN event_type NOT IN ('impression', 'play', 'share', 'comment') THEN 'unknown_event_type'")
    checks += [f"WHEN event_type = '{t}' AND {name} IS NULL THEN 'missing_field:{name}'"
               for t, names in by_type.items() for name in names]
    string_fields = [n for n in fields if n not in ("position", "watch_ms", "comment_len", "ts")]
    checks += [f"WHEN left({n}, 1) IN ('{{', '[') THEN 'bad_type:{n}'" for n in string_fields]
    checks += [f"WHEN event_type = '{t}' AND NOT regexp_full_match({n}, '{INTEGER}') THEN 'bad_type:{n}'"
               for t, n in integer.items()]
    checks += [
        "WHEN ts_parsed IS NULL THEN 'bad_timestamp'",
        f"WHEN ts_parsed < TIMESTAMP '{day}' - INTERVAL {int(max_late_hours * 3600)} SECOND "
        f"OR ts_parsed >= TIMESTAMP '{day}' + INTERVAL {86400 + int(max_early_minutes * 60)} SECOND THEN 'clock_skew'",
        "WHEN event_type = 'play' AND watch_ms::BIGINT < 0 THEN 'negative_watch_ms'",
        f"WHEN event_type = 'play' AND watch_ms::BIGINT > {max_watch_ms} THEN 'absurd_watch_ms'",
        "WHEN event_type = 'impression' AND position::BIGINT < 0 THEN 'bad_value:position'",
        "WHEN event_type = 'comment' AND comment_len::BIGINT < 0 THEN 'bad_value:comment_len'",
    ]
    window = int(round(window_hours * 3600))
    return [
        f"""CREATE TEMP TABLE lines AS SELECT filename AS source_file, column0 AS value
            FROM read_csv({events}, columns = {{'column0': 'VARCHAR'}}, delim = '\\x01', quote = '', escape = '',
                          header = false, filename = true, auto_detect = false)""",
        f"""CREATE TEMP TABLE items AS SELECT item_id, author_id, category, duration_ms::BIGINT AS duration_ms,
                   upload_ts::TIMESTAMP AS upload_ts
            FROM read_json({items}, columns = {{item_id: 'VARCHAR', author_id: 'VARCHAR', category: 'VARCHAR',
                           duration_ms: 'VARCHAR', upload_ts: 'VARCHAR'}})
            WHERE regexp_full_match(duration_ms, '[0-9]{{1,15}}') AND duration_ms::BIGINT > 0
            QUALIFY row_number() OVER (PARTITION BY item_id) = 1""",
        f"""CREATE TEMP TABLE users AS SELECT user_id, age_bucket, gender, region
            FROM read_json({users}, columns = {{user_id: 'VARCHAR', age_bucket: 'VARCHAR', gender: 'VARCHAR',
                           region: 'VARCHAR', signup_ts: 'VARCHAR'}})
            QUALIFY row_number() OVER (PARTITION BY user_id) = 1""",
        f"""CREATE TEMP TABLE validated AS
            WITH j AS (SELECT source_file, value, hash(value) AS line_hash,
                              CASE WHEN json_valid(value) THEN json_extract_string(value, [{paths}]) END AS f
                       FROM lines),
                 s AS (SELECT source_file, value, line_hash, f,
                              {', '.join(f'{expr} AS {name}' for name, expr in f.items())} FROM j),
                 t AS (SELECT *, CASE WHEN regexp_full_match(ts, '{INTEGER}') THEN make_timestamp(ts::BIGINT * 1000)
                                      WHEN regexp_full_match(ts, '{ISO}') THEN TRY_CAST(ts AS TIMESTAMPTZ)::TIMESTAMP
                                 END AS ts_parsed FROM s)
            SELECT source_file, value, line_hash, event_id, event_type, ts_parsed AS ts, user_id, item_id,
                   impression_id, position, device, watch_ms,
                   CASE {' '.join(checks)} END AS reason
            FROM t""",
        """CREATE TEMP TABLE classified AS
            WITH known AS (SELECT DISTINCT impression_id FROM validated
                           WHERE reason IS NULL AND event_type = 'impression'),
                 c AS (SELECT v.*, CASE
                         WHEN v.reason IS NOT NULL THEN v.reason
                         WHEN v.event_type <> 'impression' AND k.impression_id IS NULL THEN 'orphan_engagement'
                         WHEN v.event_type = 'impression' AND i.item_id IS NULL THEN 'unknown_item' END AS why
                       FROM validated v
                       LEFT JOIN known k ON v.impression_id = k.impression_id
                       LEFT JOIN (SELECT item_id FROM items) i ON v.item_id = i.item_id)
            SELECT *, CASE WHEN why IS NOT NULL THEN 'quarantined'
                           WHEN row_number() OVER (PARTITION BY event_id, why IS NULL
                                                   ORDER BY source_file, line_hash) > 1 THEN 'duplicate'
                           ELSE 'accepted' END AS status
            FROM c""",
        f"""COPY (
            WITH accepted AS (SELECT * FROM classified WHERE status = 'accepted'),
                 imps AS (SELECT impression_id, event_id, ts AS impression_ts, user_id, item_id,
                                 position::INTEGER AS position, device
                          FROM accepted WHERE event_type = 'impression' AND ts::DATE = DATE '{day}'
                          QUALIFY row_number() OVER (PARTITION BY impression_id ORDER BY event_id) = 1),
                 eng AS (SELECT impression_id, event_type, ts, watch_ms::BIGINT AS watch_ms
                         FROM accepted WHERE event_type <> 'impression'),
                 labels AS (SELECT i.impression_id,
                               max((e.event_type = 'play')::INTEGER) AS play,
                               sum(CASE WHEN e.event_type = 'play' THEN e.watch_ms ELSE 0 END) AS watch_ms,
                               max((e.event_type = 'share')::INTEGER) AS share,
                               max((e.event_type = 'comment')::INTEGER) AS comment
                            FROM imps i JOIN eng e ON e.impression_id = i.impression_id
                            AND e.ts >= i.impression_ts AND e.ts <= i.impression_ts + INTERVAL {window} SECOND
                            GROUP BY i.impression_id)
            SELECT i.*, it.author_id, it.category, it.duration_ms, it.upload_ts, u.age_bucket, u.gender, u.region,
                   coalesce(l.play, 0) AS play, coalesce(l.watch_ms, 0) AS watch_ms,
                   CASE WHEN l.play = 1 THEN least(1.0, l.watch_ms / it.duration_ms) END AS watch_ratio,
                   coalesce(l.share, 0) AS share, coalesce(l.comment, 0) AS comment
            FROM imps i JOIN items it ON i.item_id = it.item_id
            LEFT JOIN users u ON i.user_id = u.user_id
            LEFT JOIN labels l ON i.impression_id = l.impression_id
        ) TO '{out}' (FORMAT parquet)""",
    ]


def core_extract(raw_dir: Path, day: str, out: Path, threads: int = 2, window_hours: float = 6.0,
                 max_late_hours: float = 24.0, max_early_minutes: float = 60.0,
                 max_watch_ms: int = 4 * 3600 * 1000) -> dict:
    """Run the core work on `raw_dir`'s partition of `day`; seconds and counts."""
    try:
        import duckdb
    except ImportError:
        raise SystemExit("bench/etl_duckdb.py needs duckdb: `make bench-etl` installs it, or "
                         "pip install 'duckdb==2.0.0' (pyproject's optional group `bench`)") from None

    def files(folder: Path) -> str:
        return "[" + ", ".join(f"'{p}'" for p in sorted(folder.iterdir()) if not p.name.startswith((".", "_"))) + "]"

    out.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    for statement in _sql(files(raw_dir / "events" / f"dt={day}"), files(raw_dir / "items"),
                          files(raw_dir / "users"), day, str(out), window_hours, max_late_hours,
                          max_early_minutes, max_watch_ms):
        con.execute(statement)
    seconds = time.perf_counter() - started
    counts = dict(con.execute("SELECT status, count(*) FROM classified GROUP BY status").fetchall())
    examples = con.execute(f"SELECT count(*), sum(play), sum(share), sum(comment) FROM '{out}'").fetchone()
    con.close()
    return {"seconds": seconds, "lines_read": sum(counts.values()), "accepted": counts.get("accepted", 0),
            "quarantined": counts.get("quarantined", 0), "duplicates": counts.get("duplicate", 0),
            "examples": examples[0], "plays": examples[1], "shares": examples[2], "comments": examples[3]}
