"""What `ple backfill` does: one model over a range of past dates, each on its own snapshot.

For every date the version read is the one recorded for that date
(ple_runtime/snapshot.py), so a date's figures do not change when later dates
are appended. Results go to a Delta table (default <data>/lake/backfill_metrics),
one row per (model_id, dt, task), written with MERGE after each date: a crash
keeps the dates already done, and a re-run with --force replaces rows instead
of duplicating them. A date is "done" when every task of the model has a row.
A failing date (missing partition, unreadable file, ...) is recorded and the
others go on.

Each row also carries the figures of `ple evaluate` (evaluation/comparison.py):
the intervals of AUC (DeLong) and logloss/MSE (bootstrap over rows), GAUC with
its users, the ECE, and the model's NDCG@k of the ranking score (a per-model
figure, repeated on each task's row of that date). Tables written before these
columns existed are migrated in place on the next run (`ALTER TABLE ... ADD
COLUMNS`, a metadata-only Delta commit): old rows read NULL there, and readers
that select columns by name keep working.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_registry.model_refs import ResolvedModel, load_or_fail
from model_registry.registry import registry_settings
from ple_model.metrics import GAIN_METRIC
from ple_runtime.lineage import code_version, write_json
from ple_runtime.snapshot import resolve_date_snapshot

from .config import BackfillConfig
from .model_health import add_prediction_drift, validation_reference
from .report import figure_to_base64, health_over_time_figure, render_html, time_series_figure
from .evaluate import ScoringOptions, evaluate_on_snapshot


# The first table layout; ADDED_COLUMNS came later and are added to old tables (module doc).
BASE_DDL = ("model_id STRING, model_ref STRING, dt STRING, task STRING, table_path STRING, table_version BIGINT, "
            "version_chosen_by STRING, auc DOUBLE, logloss DOUBLE, mse DOUBLE, mae DOUBLE, calibration DOUBLE, "
            "mean_prediction DOUBLE, observed DOUBLE, count BIGINT, positives BIGINT, evaluated_at TIMESTAMP, "
            "code_commit STRING")
ADDED_COLUMNS = ("auc_low DOUBLE, auc_high DOUBLE, logloss_low DOUBLE, logloss_high DOUBLE, mse_low DOUBLE, "
                 "mse_high DOUBLE, gauc DOUBLE, gauc_low DOUBLE, gauc_high DOUBLE, gauc_users BIGINT, "
                 "gauc_users_skipped BIGINT, ece DOUBLE, ndcg DOUBLE, ndcg_low DOUBLE, ndcg_high DOUBLE, "
                 "ndcg_k BIGINT, interval_level DOUBLE, bootstrap_resamples BIGINT, calibration_method STRING, "
                 "calibration_low DOUBLE, calibration_high DOUBLE, prediction_psi DOUBLE, drift_reference_dt STRING")
METRICS_DDL = f"{BASE_DDL}, {ADDED_COLUMNS}"
KEY_COLUMNS = ("model_id", "dt", "task")


@dataclass
class BackfillOutcome:
    evaluated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    plot_path: Path | None = None
    html_path: Path | None = None
    summary_path: Path | None = None


def date_range(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _bound(metrics: dict[str, Any], metric: str, side: str) -> float | None:
    return _float(((metrics.get("intervals") or {}).get(metric) or {}).get(side))


def metric_rows(model: ResolvedModel, snapshot, record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task from an evaluation record (evaluation.evaluate) of the model on the date."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    commit = code_version().get("commit")
    ranking = record["model"].get("ranking") or {}
    uncertainty = record.get("uncertainty") or {}
    rows = []
    for task, metrics in record["model"]["tasks"].items():
        rows.append({
            "model_id": model.model_id, "model_ref": model.ref, "dt": snapshot.date, "task": task,
            "table_path": snapshot.table, "table_version": snapshot.version, "version_chosen_by": snapshot.chosen_by,
            "auc": _float(metrics.get("auc")), "logloss": _float(metrics.get("logloss")),
            "mse": _float(metrics.get("mse")), "mae": _float(metrics.get("mae")),
            "calibration": _float(metrics.get("calibration")),
            "mean_prediction": _float(metrics.get("mean_prediction")),
            "observed": _float(metrics.get("observed_rate", metrics.get("mean_label"))),
            "count": int(metrics.get("count", 0)),
            "positives": int(metrics["positives"]) if "positives" in metrics else None,
            "evaluated_at": now, "code_commit": commit,
            **{f"{m}_{side}": _bound(metrics, m, side) for m in ("auc", "logloss", "mse", "gauc")
               for side in ("low", "high")},
            "gauc": _float(metrics.get("gauc")), "gauc_users": metrics.get("gauc_users"),
            "gauc_users_skipped": metrics.get("gauc_users_skipped"), "ece": _float(metrics.get("ece")),
            "ndcg": _float(ranking.get("ndcg")), "ndcg_low": _float((ranking.get("interval") or {}).get("low")),
            "ndcg_high": _float((ranking.get("interval") or {}).get("high")), "ndcg_k": ranking.get("k"),
            "interval_level": uncertainty.get("level"), "bootstrap_resamples": uncertainty.get("bootstrap_resamples"),
            "calibration_method": model.calibration.method if model.calibration is not None else None,
            **{f"calibration_{side}": _bound(metrics, "calibration", side) for side in ("low", "high")},
            "prediction_psi": _float(((record.get("model_health") or {}).get(task) or {}).get("prediction_psi")),
            "drift_reference_dt": (record.get("prediction_drift") or {}).get("reference")})
    return rows


def metrics_schema():
    """METRICS_DDL as a StructType (parsed by the JVM: needs an active session)."""
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(METRICS_DDL)


def ensure_metrics_table(spark, path: str, log=print) -> None:
    """Create the table, or add the columns an older table lacks (metadata only; old rows read NULL)."""
    from delta.tables import DeltaTable

    DeltaTable.createIfNotExists(spark).location(path).addColumns(metrics_schema()).execute()
    present = set(spark.read.format("delta").load(path).columns)
    missing = [column for column in METRICS_DDL.split(", ") if column.split()[0] not in present]
    if missing:
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({', '.join(missing)})")
        log(f"backfill: added columns {[c.split()[0] for c in missing]} to {path} (older rows read NULL there)")


def merge_rows(spark, path: str, rows: list[dict[str, Any]]) -> None:
    """Upsert by KEY_COLUMNS; the rows reach Spark as Arrow, so the merge starts no Python workers."""
    from delta.tables import DeltaTable

    from ple_runtime.local_frames import local_frame

    schema = metrics_schema()
    updates = local_frame(spark, [tuple(r[c] for c in schema.fieldNames()) for r in rows], schema)
    condition = " AND ".join(f"t.{k} = s.{k}" for k in KEY_COLUMNS)
    (DeltaTable.forPath(spark, path).alias("t").merge(updates.alias("s"), condition)
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def model_rows(spark, path: str, model_id: str) -> list[dict[str, Any]]:
    from pyspark.sql import functions as F

    frame = spark.read.format("delta").load(path).where(F.col("model_id") == model_id)
    return [row.asDict() for row in frame.collect()]


def logged_model_rows(path: str, model_id: str) -> list[dict[str, Any]] | None:
    """model_rows without Spark: the latest version's files from the Delta log, read with pyarrow.
    None when there is no table yet or the log reader cannot read it (then Spark does). Files written
    before ADDED_COLUMNS existed lack them: those read None, as Spark reads them NULL."""
    import pyarrow.parquet as pq

    from ple_runtime import arrow_storage, delta_log

    try:
        if not delta_log.is_delta_table(path):
            return None
        files = delta_log.snapshot(path).files
    except delta_log.DeltaLogError:
        return None
    columns = [c.split()[0] for c in METRICS_DDL.split(", ")]
    rows = []
    for file in files:
        source, location = arrow_storage.filesystem(file.path)
        part = pq.read_table(location, filesystem=source, filters=[("model_id", "==", model_id)])
        rows.extend({c: r.get(c) for c in columns} for r in part.to_pylist())
    return rows


def done_dates(rows: list[dict[str, Any]], tasks: list[str]) -> set[str]:
    by_date: dict[str, set[str]] = {}
    for row in rows:
        by_date.setdefault(row["dt"], set()).add(row["task"])
    return {d for d, done in by_date.items() if set(tasks) <= done}


def run(config: BackfillConfig, spark=None, log=print) -> BackfillOutcome:
    """`ple backfill`'s stage: load the model (a temporary folder for downloads), then run_backfill."""
    with tempfile.TemporaryDirectory(prefix="ple-backfill-") as workdir:
        settings = registry_settings(config.data_dir, config.tracking_uri, config.registered_model)
        model = load_or_fail(config.model, settings, Path(workdir), config.resolved_device)
        if spark is None and not config.force:
            done = summarise_if_done(config, model, log)
            if done is not None:
                return done
        if spark is None:
            from ple_runtime.spark import get_spark

            spark = get_spark("ple-backfill")
        return run_backfill(config, model, spark, log)


def summarise_if_done(config: BackfillConfig, model: ResolvedModel, log=print) -> BackfillOutcome | None:
    """When every date of the range is already done (the DAG's summary after its mapped tasks): the
    outputs from the table read without Spark, so no JVM starts. None when there is work to do."""
    rows = logged_model_rows(config.metrics_table_path, model.model_id)
    dates = date_range(config.start, config.end)
    if rows is None or not set(dates) <= done_dates(rows, model.spec.task_names):
        return None
    outcome = BackfillOutcome()
    for date in dates:
        _skip(date, model, outcome, log)
    write_outputs(config, model, rows, outcome)
    return outcome


def _skip(date: str, model: ResolvedModel, outcome: BackfillOutcome, log) -> None:
    outcome.skipped.append(date)
    log(f"backfill: {date} already done for {model.model_id} (use --force to redo)")


def run_backfill(config: BackfillConfig, model: ResolvedModel, spark, log=print) -> BackfillOutcome:
    outcome = BackfillOutcome()
    table = config.metrics_table_path
    ensure_metrics_table(spark, table, log)
    tasks = model.spec.task_names
    already = done_dates(model_rows(spark, table, model.model_id), tasks)
    options = ScoringOptions.from_config(config)
    reference = validation_reference(model, options, spark)  # prediction drift: against the validation day
    if reference.get("note"):
        log(f"backfill: no prediction drift: {reference['note']}")
    for date in date_range(config.start, config.end):
        if date in already and not config.force:
            _skip(date, model, outcome, log)
            continue
        try:
            snapshot = resolve_date_snapshot(config.table_path, date, partition_column=config.partition_column)
            record = evaluate_on_snapshot(snapshot, model, options=options, spark=spark)
            add_prediction_drift(record, reference)
            merge_rows(spark, table, metric_rows(model, snapshot, record))
            outcome.evaluated.append(date)
            scores = record["model"]["tasks"]
            shown = ", ".join(f"{t} {GAIN_METRIC[model.spec.task(t).type][0]}="
                              f"{scores[t].get(GAIN_METRIC[model.spec.task(t).type][0], float('nan')):.4f}"
                              for t in tasks)
            log(f"backfill: {date} version {snapshot.version} ({snapshot.rows} rows): {shown}")
        except Exception as error:  # noqa: BLE001 (one bad date must not stop the others)
            message = f"{type(error).__name__}: {error}".strip()
            outcome.failed[date] = message.splitlines()[0] if message else repr(error)
            log(f"backfill: {date} FAILED: {outcome.failed[date]}")
            if config.debug_tracebacks:
                traceback.print_exc()
    write_outputs(config, model, model_rows(spark, table, model.model_id), outcome)
    return outcome


def _with_interval(row: dict[str, Any], metric: str) -> str:
    value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def write_outputs(config, model: ResolvedModel, rows_of_model: list[dict[str, Any]], outcome: BackfillOutcome) -> None:
    """The plots, the HTML report and backfill.json of the range, from the model's rows of the table."""
    rows = [r for r in rows_of_model if config.start.isoformat() <= r["dt"] <= config.end.isoformat()]
    out = Path(config.out_path(model))
    out.mkdir(parents=True, exist_ok=True)
    metric_by_task = {t.name: GAIN_METRIC[t.type][0] for t in model.spec.tasks}
    title = f"{model.label} ({model.model_id}) {config.start}..{config.end}"
    figure = time_series_figure(rows, metric_by_task, title)
    image = figure_to_base64(figure)
    import base64

    outcome.plot_path = out / "backfill.png"
    outcome.plot_path.write_bytes(base64.b64decode(image))
    table_rows = [[{"text": r["dt"]}, {"text": r["task"]}, {"text": r["table_version"]},
                   *({"text": "n/a" if r.get(m) is None or (isinstance(r.get(m), float) and not math.isfinite(r[m]))
                      else (f"{r[m]:.5f}" if isinstance(r[m], float) else str(r[m]))}
                     for m in ("auc", "gauc", "logloss", "mse")),
                   {"text": _with_interval(r, "calibration")},
                   {"text": "n/a" if r.get("prediction_psi") is None
                    else f"{r['prediction_psi']:.4f} (vs {r.get('drift_reference_dt')})"},
                   *({"text": "n/a" if r.get(m) is None else (f"{r[m]:.5f}" if isinstance(r[m], float) else str(r[m]))}
                     for m in ("ndcg", "count"))]
                  for r in sorted(rows, key=lambda r: (r["dt"], r["task"]))]
    health_image = figure_to_base64(health_over_time_figure(rows, title))
    sections = [{"title": "Metrics over time", "images": [image], "table": None,
                 "note": f"metrics table: {config.metrics_table_path}"},
                {"title": "Calibration and prediction drift over time", "images": [health_image], "table": None,
                 "note": "calibration: mean prediction / observed, with its bootstrap interval; prediction PSI: the "
                         "day's predictions against the model's validation day (docs/EVALUATION.md)"},
                {"title": "Rows", "images": [], "table": {
                    "header": ["dt", "task", "table version", "auc", "gauc", "logloss", "mse",
                               "calibration [interval]", "prediction PSI", "ndcg (model)", "count"],
                    "rows": table_rows}}]
    if outcome.failed:
        sections.append({"title": "Failed dates", "images": [], "table": {
            "header": ["dt", "error"], "rows": [[{"text": d}, {"text": e}] for d, e in outcome.failed.items()]}})
    outcome.html_path = out / "backfill.html"
    outcome.html_path.write_text(render_html(f"Backfill of {title}", sections))
    outcome.summary_path = write_json(out / "backfill.json", {
        "model": model.identity(), "start": config.start.isoformat(), "end": config.end.isoformat(),
        "metrics_table": config.metrics_table_path, "evaluated": outcome.evaluated, "skipped": outcome.skipped,
        "failed": outcome.failed})
