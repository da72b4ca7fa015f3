"""`ple evaluate`: a candidate model (and the models it is compared with) on one date snapshot.

`run_evaluation(config)` resolves the snapshot and the models, `evaluate_on_snapshot`
reads the rows once and scores every model on them:
- the candidate: per-task metrics with intervals, GAUC, calibration curves and
  ECE, NDCG@k of its ranking score, gate usage;
- the published model (registry alias, default `production`) when there is one,
  with the candidate's improvement over it per task and metric (paired interval);
- single-task baselines (model name `single_task`) trained on the same data:
  per task the first baseline that predicts it; the MTL gain of Eq. 11
  (`ple_model.metrics.mtl_gain`; AUC for binary tasks, MSE reversed for
  regression; positive = the multi-task model is better) with its interval, and
  the same for GAUC and NDCG of the ranking score ("the single-task system" =
  every task predicted by its own baseline);
- any other models named with `compare` (one more point on the seesaw plot).
Every model is judged on the candidate spec's sample spaces, so all figures
are paired (evaluation/comparison.py says how intervals are computed). A
model that cannot be scored on this table (a column its spec needs is missing)
is reported with its error instead of failing the evaluation; only the
candidate must score. With `calibrate_on`, every model but the published one
gets a post-hoc calibration fitted on that date first (the published model is
scored as served, with the calibration its file carries).
Writes <out>/metrics.json and <out>/report.html.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from model_registry.model_refs import ResolvedModel, find_model_files, load_or_fail, load_production
from model_registry.registry import registry_settings
from ple_model import model_inputs
from ple_model.metrics import GAIN_METRIC, mtl_gain
from ple_model.model_inputs import source_columns
from ple_model.prediction import aligned_batch_rows, predict
from ple_runtime import arrow_storage
from ple_runtime.config import config_as_dict
from ple_runtime.lineage import run_context, write_json
from ple_runtime.snapshot import DateSnapshot, SnapshotError, resolve_date_snapshot

from .comparison import RANKING_KEY, REPORTED_METRICS, PairedScores
from .config import EvaluateConfig, EvaluationFailed, RankingSettings, UncertaintySettings
from .model_health import add_prediction_drift, task_health, validation_reference
from .report import evaluation_report
from .scoring import calibration_change, score_predictions
from .snapshot_rows import iter_date_snapshot
from .streaming import (DEFAULT_MEMORY_BUDGET_MB, DEFAULT_ROWS_PER_BATCH, CompactStore, DayArrays, PassSettings,
                        ScoredModel, frame_batches, score_day)

EVALUATION_FORMAT = "ple-evaluation/1"   # keys only added since (intervals, GAUC, ranking, calibration)
SINGLE_TASK_SYSTEM = "single-task system"


@dataclass
class ScoringOptions:
    batch_size: int = 8192
    device: str = "cpu"
    calibration_bins: int = 10
    reader: str = "auto"
    uncertainty: UncertaintySettings = field(default_factory=UncertaintySettings)
    ranking: RankingSettings = field(default_factory=RankingSettings)
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH        # rows read and scored at a time (streaming.py)
    memory_budget_mb: int | None = DEFAULT_MEMORY_BUDGET_MB   # compact arrays in memory; beyond: files
    spill_dir: str | None = None                          # where they spill (default: the temp directory)

    @classmethod
    def from_config(cls, config) -> "ScoringOptions":
        return cls(config.batch_size, config.resolved_device, config.calibration_bins, config.reader,
                   config.uncertainty, config.ranking, config.rows_per_batch, config.memory_budget_mb,
                   config.spill_dir)


def snapshot_columns(snapshot: DateSnapshot) -> set[str]:
    import pyarrow.parquet as pq

    if not snapshot.files:
        return set()
    filesystem, path = arrow_storage.filesystem(snapshot.files[0])
    return set(pq.read_schema(path, filesystem=filesystem).names)


@dataclass
class Scored:
    """One model on the snapshot's rows: served predictions (calibrated when it has a calibration)."""

    model: ResolvedModel
    predictions: dict[str, np.ndarray] | None = None
    gates: list | None = None
    raw_tasks: dict[str, Any] | None = None     # metrics before calibration (only when calibrated)
    error: str | None = None


def predict_model(model: ResolvedModel, frame: pd.DataFrame, options: ScoringOptions,
                  available: set[str]) -> Scored:
    """One model on in-memory rows (kept for callers that hold a frame; evaluations stream: score_snapshot)."""
    missing = [c for c in source_columns(model.spec) if c not in available]
    if missing:
        return Scored(model, error=f"the table lacks columns {missing} that this model's spec needs")
    try:
        features = model_inputs(frame, model.spec).features
        predictions, gates = predict(model.loaded.model, model.spec, features, options.batch_size, options.device,
                                     with_gates=True)
    except Exception as error:  # noqa: BLE001 (a baseline failing must not hide the candidate's figures)
        return Scored(model, error=f"{type(error).__name__}: {error}")
    return Scored(model, predictions, gates)


def score_snapshot(snapshot: DateSnapshot, keyed_models: list[tuple[str, ResolvedModel]], options: ScoringOptions,
                   spark=None, frame: pd.DataFrame | None = None,
                   per_user: bool = True) -> tuple[DayArrays, list[tuple[str, Scored]]]:
    """One pass over the rows (the first model is the reference, the candidate: its spec gives labels and sample
    spaces, and its failure fails the pass): every model scores every batch; returns the compact arrays and a
    Scored per model, in order. `per_user=False` keeps no user ids and no ranking utility (no GAUC, no NDCG)."""
    first, spec = keyed_models[0][0], keyed_models[0][1].spec
    available = set(frame.columns) if frame is not None else snapshot_columns(snapshot)
    wanted = source_columns(spec) + [c for _, m in keyed_models[1:] for c in source_columns(m.spec) if c in available]
    user_column = options.ranking.user_column if per_user else None
    if per_user:
        utility_columns = list(options.ranking.utility or [t.label for t in spec.tasks if t.type == "binary"])
        wanted += [c for c in [user_column, *utility_columns] if c in available]
    rows = aligned_batch_rows(options.rows_per_batch, options.batch_size)
    if frame is None:
        batches = iter_date_snapshot(snapshot, list(dict.fromkeys(wanted)), rows, options.reader, spark)
    else:
        batches = frame_batches(frame, rows)
    models = []
    for key, model in keyed_models:
        missing = [c for c in source_columns(model.spec) if c not in available]
        error = f"the table lacks columns {missing} that this model's spec needs" if missing and key != first \
            else None
        models.append(ScoredModel(key, model.loaded.model, model.spec, error))
    settings = PassSettings(options.batch_size, options.device, user_column, options.ranking, spec, required=(first,))
    budget = None if options.memory_budget_mb is None else options.memory_budget_mb * 2 ** 20
    with CompactStore(budget, options.spill_dir) as store:
        day = score_day(batches, models, {first: spec}, store, settings)
    day.rows_per_batch = rows
    scored = [(key, Scored(model, day.predictions.get(key), day.gates.get(key), error=m.error))
              for (key, model), m in zip(keyed_models, models)]
    return day, scored


def model_entry(scored: Scored, tasks: dict[str, Any] | None, paired: PairedScores | None, key: str) -> dict[str, Any]:
    model = scored.model
    entry = {"identity": model.identity(), "label": model.label, "model_id": model.model_id,
             "tasks": tasks or {}, "gates": scored.gates, "rows": 0, "error": scored.error,
             "ranking": None, "calibration": None}
    if scored.error:
        return entry
    entry["rows"] = len(next(iter(scored.predictions.values()))) if scored.predictions else 0
    if paired is not None:
        for task, figures in paired.task_figures(key).items():
            if task in entry["tasks"]:
                entry["tasks"][task].update(figures)
        entry["ranking"] = paired.ranking_figures(key)
    if model.calibration is not None:
        entry["calibration"] = {**(model.calibration_source or {}), "method": model.calibration.method,
                                "fit_report": model.calibration.fit_report,
                                "tasks": calibration_change(scored.raw_tasks or {}, entry["tasks"])}
    return entry


def single_task_baselines(candidate: dict[str, Any], baselines: list[dict[str, Any]], spec) -> dict[str, Any]:
    """Per candidate task, the first single-task model that predicts it; then Eq. 11."""
    by_task: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    ignored = []
    for entry in baselines:
        if entry["error"]:
            ignored.append({"model": entry["label"], "reason": entry["error"]})
            continue
        if entry["identity"]["model_name"] != "single_task":
            ignored.append({"model": entry["label"], "reason": f"model {entry['identity']['model_name']!r} is "
                                                                "not a single-task model"})
            continue
        for task, metrics in entry["tasks"].items():
            if task in candidate["tasks"] and task not in by_task:
                by_task[task] = metrics
                sources[task] = entry["label"]
    gain = mtl_gain(candidate["tasks"], by_task, spec) if by_task else {}
    return {"gain": {t: (g if math.isfinite(g) else None) for t, g in gain.items()},
            "metric": {t.name: GAIN_METRIC[t.type][0] for t in spec.tasks},
            "single_task_metric": {t: by_task[t][GAIN_METRIC[spec.task(t).type][0]] for t in by_task},
            "single_task_model": sources, "tasks_without_baseline": [t for t in spec.task_names if t not in by_task],
            "ignored": ignored}


def compare_metrics(paired: PairedScores, key: str, reference: str, candidate: dict[str, Any],
                    other: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and reported metric: both values, the difference, the improvement (direction-aware) and its
    paired interval; `ranking` compares NDCG@k of the ranking scores."""
    comparison: dict[str, dict[str, dict[str, Any]]] = {}
    for task in paired.spec.tasks:
        mine, theirs = candidate["tasks"].get(task.name), other["tasks"].get(task.name)
        if mine is None or theirs is None:
            continue
        rows = {}
        for metric, higher_is_better in REPORTED_METRICS[task.type].items():
            change = paired.improvement(key, reference, task.name, metric, higher_is_better)
            rows[metric] = {"candidate": mine.get(metric, math.nan), "reference": theirs.get(metric, math.nan),
                            "higher_is_better": higher_is_better, **change}
        comparison[task.name] = rows
    if (candidate.get("ranking") or {}).get("ndcg") is not None and (other.get("ranking") or {}).get("ndcg") is not None:
        change = paired.improvement(key, reference, RANKING_KEY, "ndcg", True)
        comparison[RANKING_KEY] = {"ndcg": {"candidate": candidate["ranking"]["ndcg"],
                                            "reference": other["ranking"]["ndcg"], "higher_is_better": True,
                                            **change}}
    return comparison


def _gain_intervals(paired: PairedScores, gain: dict[str, Any], spec) -> None:
    """Intervals of the MTL gain (and of GAUC / NDCG against the single-task system) into `gain`."""
    gain["interval"] = {}
    for task in spec.tasks:
        if task.name in gain["gain"]:
            metric, higher_is_better = GAIN_METRIC[task.type]
            change = paired.improvement("candidate", SINGLE_TASK_SYSTEM, task.name, metric, higher_is_better)
            gain["interval"][task.name] = {k: change[k] for k in ("low", "high", "significant", "method", "level")}
    gain["gauc_gain"] = {t.name: paired.improvement("candidate", SINGLE_TASK_SYSTEM, t.name, "gauc", True)
                         for t in spec.tasks if t.type == "binary" and t.name in gain["gain"]}
    ranking = paired.improvement("candidate", SINGLE_TASK_SYSTEM, RANKING_KEY, "ndcg", True)
    gain["ranking_gain"] = ranking if ranking["difference"] is not None else None


def evaluate_on_snapshot(snapshot: DateSnapshot, candidate: ResolvedModel, *, production: ResolvedModel | None = None,
                         production_note: str | None = None, single_task: list[ResolvedModel] = (),
                         compare: list[ResolvedModel] = (), options: ScoringOptions | None = None,
                         spark=None, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Score every model on the snapshot's rows; returns the evaluation record (JSON-safe).
    The rows are read and scored batch by batch (evaluation/streaming.py); `frame` scores given rows instead."""
    options = options or ScoringOptions()
    keyed_models = [("candidate", candidate)] + ([("production", production)] if production is not None else [])
    keyed_models += [(f"single_task/{i}", m) for i, m in enumerate(single_task)]
    keyed_models += [(f"compare/{i}", m) for i, m in enumerate(compare)]
    day, keyed = score_snapshot(snapshot, keyed_models, options, spark, frame)
    if day.rows == 0:
        raise ValueError(f"{snapshot.table} {snapshot.partition_column}={snapshot.date} version {snapshot.version} "
                         "has no rows")
    return evaluation_record(snapshot, keyed, day, options, production_note)


def paired_scores(keyed: list[tuple[str, Scored]], day: DayArrays,
                  options: ScoringOptions) -> tuple[PairedScores, dict[str, dict[str, Any] | None]]:
    """The scoring core of `ple evaluate`, `ple backfill` and `ple experiment`: every scored model's per-task
    metrics on its served predictions (calibrated when it carries a calibration; raw_tasks keeps the figures
    before) and its predictions added to one PairedScores on the day's rows (the first model's labels).
    Not yet computed: callers may add more prediction sets first."""
    first, reference = keyed[0]
    if reference.error:
        raise ValueError(f"cannot score {reference.model.label}: {reference.error}")
    spec = reference.model.spec
    labels, masks = day.labels[first], day.masks[first]
    paired = PairedScores(spec, labels, masks, users=day.users, utility=day.utility,
                          uncertainty=options.uncertainty, ranking=options.ranking, ranking_note=day.ranking_note)

    def tasks_of(key: str, scored: Scored) -> dict[str, Any] | None:
        if scored.error:
            return None
        predictions = scored.predictions
        if scored.model.calibration is not None:
            scored.raw_tasks = score_predictions(spec, predictions, labels, masks, options.calibration_bins)
            predictions = scored.predictions = scored.model.calibration.apply_numpy(predictions)
            if key in day.predictions:   # the served (calibrated) ones from now on: the raw ones can go
                day.predictions[key] = predictions
        return score_predictions(spec, predictions, labels, masks, options.calibration_bins)

    task_metrics = {key: tasks_of(key, scored) for key, scored in keyed}
    for key, scored in keyed:
        if not scored.error:
            paired.add(key, scored.predictions)
    return paired, task_metrics


def evaluation_record(snapshot: DateSnapshot, keyed: list[tuple[str, Scored]], day: DayArrays,
                      options: ScoringOptions, production_note: str | None = None) -> dict[str, Any]:
    """Every figure of the record from the scored models (`keyed`: candidate first, then production,
    single_task/i, compare/i) and the day's labels, sample spaces, users and utility."""
    paired, task_metrics = paired_scores(keyed, day, options)
    scored_candidate = keyed[0][1]
    spec = scored_candidate.model.spec
    labels, masks = day.labels["candidate"], day.masks["candidate"]
    production_scored = next((s for k, s in keyed if k == "production"), None)
    baselines = [s for k, s in keyed if k.startswith("single_task/")]
    compared = [s for k, s in keyed if k.startswith("compare/")]
    system = _single_task_system(keyed)
    if system:
        paired.add(SINGLE_TASK_SYSTEM, system)
    paired.compute()

    entries = {key: model_entry(scored, task_metrics[key], paired, key) for key, scored in keyed}
    candidate_entry = entries["candidate"]
    record: dict[str, Any] = {"format": EVALUATION_FORMAT, "snapshot": snapshot.summary(), "model": candidate_entry}
    if production_scored is not None:
        record["production"] = entries["production"]
        if not production_scored.error:
            record["production_comparison"] = compare_metrics(paired, "candidate", "production", candidate_entry,
                                                              entries["production"])
    else:
        record["production"] = None
        record["production_note"] = production_note
    record["single_task"] = [entries[f"single_task/{i}"] for i in range(len(baselines))]
    record["mtl_gain"] = None
    if baselines:
        record["mtl_gain"] = single_task_baselines(candidate_entry, record["single_task"], spec)
        if system:
            _gain_intervals(paired, record["mtl_gain"], spec)
            record["mtl_gain"]["single_task_system_ranking"] = paired.ranking_figures(SINGLE_TASK_SYSTEM)
    record["compare"] = [entries[f"compare/{i}"] for i in range(len(compared))]
    record["model_health"] = task_health(spec, scored_candidate.predictions, labels, masks)  # evaluation/model_health.py
    record["uncertainty"] = paired.settings_record()
    record["scoring"] = {"rows_per_batch": day.rows_per_batch, "compact_bytes": day.compact_bytes,
                         "compact_bytes_per_row": round(day.compact_bytes / max(day.rows, 1), 1),
                         "spilled": day.spilled}
    record["spec"] = spec.model_dump(mode="json")
    return record


def _single_task_system(keyed: list[tuple[str, Scored]]) -> dict[str, np.ndarray]:
    """The single-task system: every task predicted by its own baseline (the first that predicts it)."""
    system: dict[str, np.ndarray] = {}
    for key, scored in keyed:
        if key.startswith("single_task/") and not scored.error and scored.model.loaded.model_name == "single_task":
            for task, values in scored.predictions.items():
                system.setdefault(task, values)
    return system


def seesaw_points(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per model (as in the paper): {label, kind, metrics {task: gain metric value}}."""
    from ple_model import ModelSpec

    spec = ModelSpec.model_validate(record["spec"])
    metric_of = {t.name: GAIN_METRIC[t.type][0] for t in spec.tasks}

    def point(entry, kind):
        values = {t: entry["tasks"][t].get(metric_of[t]) for t in metric_of if t in entry["tasks"]}
        return {"label": entry["label"], "kind": kind, "metrics": values}

    points = [point(record["model"], "candidate")]
    if record.get("production") and not record["production"]["error"]:
        points.append(point(record["production"], "production"))
    for entry in record.get("compare") or []:
        if not entry["error"]:
            points.append(point(entry, "compare"))
    gain = record.get("mtl_gain")
    if gain and gain["single_task_metric"]:
        points.append({"label": "single-task", "kind": "single_task", "metrics": dict(gain["single_task_metric"])})
    return points


# --- calibration fitted on a validation date ---------------------------------------------

def calibrate_models(models: Iterable[ResolvedModel], table: str, date, options: ScoringOptions, method: str,
                     partition_column: str = "dt", spark=None) -> dict[str, Any]:
    """Fit a post-hoc calibration for each model on `date` (its recorded version) and attach it to the model."""
    from ple_model.calibration import fit_calibration

    models = list(models)
    snapshot = resolve_date_snapshot(table, date, partition_column=partition_column)
    wanted = list(dict.fromkeys(c for m in models for c in source_columns(m.spec)))
    keyed = {f"model{i}": model for i, model in enumerate(models)}
    scored = [ScoredModel(key, model.loaded.model, model.spec) for key, model in keyed.items()]
    batches = iter_date_snapshot(snapshot, wanted, aligned_batch_rows(options.rows_per_batch, options.batch_size),
                                 options.reader, spark)
    budget = None if options.memory_budget_mb is None else options.memory_budget_mb * 2 ** 20
    try:
        with CompactStore(budget, options.spill_dir) as store:
            day = score_day(batches, scored, {key: model.spec for key, model in keyed.items()}, store,
                            PassSettings(options.batch_size, options.device, required=tuple(keyed)))
    except KeyError as error:
        raise EvaluationFailed(f"calibration date: {str(error).strip(chr(39) + chr(34))}") from None
    for key, model in keyed.items():
        model.calibration = fit_calibration(model.spec, day.predictions[key], day.labels[key], day.masks[key],
                                            method=method)
        model.calibration_source = {"source": "fitted", "method": method, "fitted_on": snapshot.summary(),
                                    "replaced": "model file" if (model.calibration_source or {}).get("source")
                                    == "model file" else None}
    return snapshot.summary()


# --- the job ---------------------------------------------------------------------------

def _fmt_interval(change: dict[str, Any] | None) -> str:
    if not change or change.get("low") is None:
        return ""
    return f" [{change['low']:+.4f}, {change['high']:+.4f}]" + ("*" if change.get("significant") else "")


def summary_lines(record: dict[str, Any]) -> list[str]:
    """The CLI summary: per task the headline metrics with intervals; gains marked * when significant."""
    lines = []
    snapshot = record["snapshot"]
    level = record.get("uncertainty", {}).get("level", 0.95)
    lines.append(f"{record['model']['label']} on {snapshot['partition_column']}={snapshot['date']} "
                 f"version {snapshot['version']} ({snapshot['rows']} rows); [{level:.0%} interval], "
                 "* = interval excludes 0")
    gain = record.get("mtl_gain") or {}
    comparison = record.get("production_comparison") or {}
    for task, metrics in record["model"]["tasks"].items():
        shown = []
        for key in ("auc", "gauc", "logloss", "mse", "ece"):
            value = metrics.get(key)
            if isinstance(value, float) and math.isfinite(value):
                interval = (metrics.get("intervals") or {}).get(key) or {}
                bounds = f" [{interval['low']:.4f}, {interval['high']:.4f}]" if interval.get("low") is not None else ""
                shown.append(f"{key}={value:.4f}{bounds}")
        extra = ""
        if (gain.get("gain") or {}).get(task) is not None:
            extra += f"; MTL gain {gain['gain'][task]:+.4f}{_fmt_interval((gain.get('interval') or {}).get(task))}"
        if task in comparison:
            metric = "auc" if "auc" in comparison[task] else "mse"
            change = comparison[task][metric]
            extra += f"; vs production {change['improvement']:+.4f}{_fmt_interval(change)} ({metric})"
        lines.append(f"{task}: {', '.join(shown)} (n={metrics.get('count')}){extra}")
    ranking = record["model"].get("ranking") or {}
    if ranking.get("ndcg") is not None:
        interval = ranking.get("interval") or {}
        bounds = f" [{interval['low']:.4f}, {interval['high']:.4f}]" if interval.get("low") is not None else ""
        extra = ""
        if gain.get("ranking_gain"):
            extra += f"; vs single-task system {gain['ranking_gain']['improvement']:+.4f}" \
                     f"{_fmt_interval(gain['ranking_gain'])}"
        if RANKING_KEY in comparison:
            change = comparison[RANKING_KEY]["ndcg"]
            extra += f"; vs production {change['improvement']:+.4f}{_fmt_interval(change)}"
        lines.append(f"ranking score NDCG@{ranking['k']}={ranking['ndcg']:.4f}{bounds} over {ranking['users']} users"
                     f"{extra}")
    calibration = record["model"].get("calibration")
    if calibration:
        changes = ", ".join(f"{task} ECE {c['before'].get('ece', math.nan):.4f} -> {c['after'].get('ece', math.nan):.4f}"
                            for task, c in calibration["tasks"].items())
        lines.append(f"calibration ({calibration['method']}, {calibration.get('source')}): {changes}")
    return lines


def run(config: EvaluateConfig, spark=None) -> dict[str, Any]:
    """`ple evaluate`'s stage (also `ple pipeline`'s): run_evaluation with a temporary folder for downloads."""
    with tempfile.TemporaryDirectory(prefix="ple-evaluate-") as workdir:
        return run_evaluation(config, Path(workdir), spark)


def run_evaluation(config: EvaluateConfig, workdir: Path, spark=None) -> dict[str, Any]:
    """Evaluate per an EvaluateConfig; writes metrics.json + report.html; returns paths and the record."""
    device = config.resolved_device
    settings = registry_settings(config.data_dir, config.tracking_uri, config.registered_model)
    snapshot = resolve_date_snapshot(config.table_path, config.date, version=config.version,
                                     timestamp=config.timestamp, partition_column=config.partition_column)
    candidate = load_or_fail(config.model, settings, workdir / "candidate", device)
    production, note = (None, "comparison with the published model turned off")
    if config.with_production:
        try:
            production, note = load_production(settings, config.production_alias, workdir / "production", device)
        except Exception as error:  # noqa: BLE001 (a broken registry must not block evaluating a run)
            production, note = None, f"could not load the published model: {type(error).__name__}: {error}"
    try:
        single_task = [load_or_fail(str(p), settings, workdir, device) for p in find_model_files(config.single_task_runs)]
    except FileNotFoundError as error:
        raise EvaluationFailed(f"single-task runs: {error}") from None
    compare = [load_or_fail(ref, settings, workdir / f"compare{i}", device) for i, ref in enumerate(config.compare)]
    options = ScoringOptions.from_config(config)
    if config.calibrate_on is not None:
        calibrate_models([candidate, *single_task, *compare], config.table_path, config.calibrate_on, options,
                         config.calibration_method, config.partition_column, spark)
    try:
        record = evaluate_on_snapshot(snapshot, candidate, production=production, production_note=note,
                                      single_task=single_task, compare=compare, options=options, spark=spark)
    except (KeyError, ValueError, SnapshotError) as error:
        raise EvaluationFailed(str(error).strip("'\"")) from None
    add_prediction_drift(record, validation_reference(candidate, options, spark))
    record["config"] = config_as_dict(config)
    record["lineage"] = {"run": run_context(), "model_training_run": _training_lineage(candidate)}
    out = Path(config.out) if config.out else default_out(config, candidate, snapshot.version)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = write_json(out / "metrics.json", record)
    report_path = out / "report.html"
    tmp = report_path.with_suffix(".html.tmp")
    tmp.write_text(evaluation_report(record, seesaw_points(record)))
    tmp.replace(report_path)
    return {"metrics_path": metrics_path, "report_path": report_path, "record": record,
            "summary": summary_lines(record)}


def default_out(config, candidate: ResolvedModel, version: int | None) -> Path:
    from ple_runtime.lake import Lake

    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in candidate.model_id)
    return Path(Lake(config.data_dir).reports, "evaluate", name, f"{config.date}-v{version}")


def _training_lineage(model: ResolvedModel) -> dict[str, Any]:
    """What the model was trained on, from its run record or model.pt metadata."""
    lineage: dict[str, Any] = {}
    metadata = model.loaded.metadata or {}
    for key in ("snapshot", "validation_snapshot", "code", "epoch", "vocabulary", "training"):
        if key in metadata:
            lineage[key] = metadata[key]
    if model.run_record:
        record = model.run_record
        for key in ("delta_version", "train_snapshot", "validation_snapshot", "code_version", "config"):
            if key in record:
                lineage[f"run_record.{key}"] = record[key]
    return lineage
