"""`ple experiment`: train models x seeds on one table and date split, evaluate all on the test day.

For every (model, seed) the run is `ple train`'s own code (`training.launch.run_training` with a
typed `TrainConfig`), written to <out>/runs/<model>/seed<k>/ and reused on a re-run when its
settings are unchanged (orchestration/runs.py, the same "reuse or train" as `ple pipeline`). Then every run is scored on the SAME rows of the test day (one read of
the snapshot, the first model's spec for labels and sample spaces), and:

- per run: every task's metric with its interval (evaluation/comparison.py: DeLong for AUC, paired
  bootstrap for MSE/logloss over rows and for GAUC/NDCG over users), GAUC, NDCG@k of the ranking
  score, the calibration ratio, gate usage;
- per run, its MTL gain (Eq. 11) against the single_task run of the SAME seed, with a paired
  interval (sampling noise of the test day) and whether it excludes 0;
- per model, across seeds: mean and standard deviation of every figure and of the gains, and a
  t interval of the mean gain (training noise: K seeds; needs K >= 2).
Outputs: <out>/experiment.json, <out>/report.html and <out>/seesaw.md (the table for docs).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.comparison import RANKING_KEY, PairedScores
from evaluation.config import EvaluationFailed
from evaluation.evaluate import ScoringOptions, calibrate_models, paired_scores, score_snapshot
from model_registry.model_refs import ResolvedModel, load_model_ref
from model_registry.registry import registry_settings
from ple_model.metrics import GAIN_METRIC
from ple_runtime.snapshot import resolve_date_snapshot

from .config import ExperimentConfig
from .runs import train_or_reuse

EXPERIMENT_FORMAT = "ple-experiment/1"
BASELINE = "single_task"


def run_key(model: str, seed: int) -> str:
    return f"{model}/seed{seed}"


def train_config(config: ExperimentConfig, model: str, seed: int):
    """The TrainConfig of one run (typed: the same object `ple train` builds from its command line)."""
    from training.config import TrainConfig

    return TrainConfig.model_validate({
        "table": config.table_path, "partition_column": config.partition_column,
        "train_start": config.train_start, "train_end": config.train_end,
        "validation_date": config.validation_date, "spec": config.spec, "model": model,
        "model_params": config.model_params_of(model), "weighting": config.weighting,
        "weighting_params": config.weighting_params, "task_weights": config.task_weights,
        "epochs": config.epochs, "batch_size": config.batch_size,
        "lr": config.lr, "seed": seed, "workers": config.workers, "launcher": config.launcher,
        "early_stop_metric": config.early_stop_metric, "progress": False, "device": config.device,
        "out": str(Path(config.out_path, "runs", model, f"seed{seed}")), **config.train_settings})


def train_all(config: ExperimentConfig, log=print) -> dict[str, dict[str, Any]]:
    """Train every (model, seed) not already trained with the same settings; returns per run: path, seconds."""
    runs: dict[str, dict[str, Any]] = {}
    for seed in config.seeds:
        for model in config.models:
            train = train_config(config, model, seed)
            key = run_key(model, seed)
            started = time.perf_counter()
            reused = train_or_reuse(train, "experiment_train_config.json", log=lambda line: log(f"experiment: {line}"),
                                    label=key)
            runs[key] = {"path": train.out, "seconds": None if reused else round(time.perf_counter() - started, 1),
                         "reused": reused}
    return runs


def _parameters(model: ResolvedModel) -> int:
    return int(sum(p.numel() for p in model.loaded.model.parameters()))


def _gate_summary(gates: list | None) -> dict[str, Any] | None:
    """Per level and gate: weight on its own experts (the shared gate's own are the shared experts), on shared
    experts, on other tasks' experts, and the normalised entropy."""
    if not gates:
        return None
    summary = []
    for level in gates:
        row = {}
        for gate, usage in level.items():
            own = sum(w for e, w in usage["mean_weight"].items() if e.split("/")[0] == gate)
            shared = 0.0 if gate == "shared" else sum(w for e, w in usage["mean_weight"].items()
                                                      if e.startswith("shared/"))
            row[gate] = {"own": own, "shared": shared, "other": max(0.0, 1.0 - own - shared),
                         "normalized_entropy": usage["normalized_entropy"]}
        summary.append(row)
    return summary


def _mean_sd(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(np.mean(finite)), "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
            "n": len(finite), "values": finite}


def _t_interval(values: list[float], level: float) -> dict[str, Any] | None:
    """Interval of the mean over seeds (Student t, K - 1 degrees of freedom); None with fewer than 2 seeds."""
    from scipy.stats import t

    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return None
    mean, sd = float(np.mean(finite)), float(np.std(finite, ddof=1))
    half = float(t.ppf(0.5 + level / 2, len(finite) - 1)) * sd / math.sqrt(len(finite))
    low, high = mean - half, mean + half
    return {"low": low, "high": high, "level": level, "seeds": len(finite),
            "significant": bool(low > 0 or high < 0)}


def _load_runs(config: ExperimentConfig, runs: dict[str, dict[str, Any]], options: ScoringOptions,
               spark=None) -> dict[str, ResolvedModel]:
    """Every run's model (calibrated on the validation day first when config.calibrate)."""
    settings = registry_settings(config.data_dir, None, "ple_video")
    models = {key: load_model_ref(run["path"], settings, device=options.device) for key, run in runs.items()}
    if config.calibrate:
        calibrate_models(models.values(), config.table_path, config.validation_date, options, config.calibration_method,
                         config.partition_column, spark)
    return models


def _add_gains(per_run: dict[str, dict[str, Any]], paired: PairedScores, spec) -> None:
    """Per run: its intervals and ranking figures, and its gain over the single_task run of the same seed."""
    for key, entry in per_run.items():
        for task, figures in paired.task_figures(key).items():
            entry["tasks"][task].update(figures)
            entry["tasks"][task].pop("calibration_curve", None)
        entry["ranking"] = paired.ranking_figures(key)
        model, seed = key.split("/seed")
        baseline = run_key(BASELINE, int(seed))
        entry["gain"] = {}
        if baseline in per_run and model != BASELINE:
            for task in spec.tasks:
                for metric, higher in ([GAIN_METRIC[task.type]] + ([("gauc", True)] if task.type == "binary" else [])):
                    entry["gain"][f"{task.name}.{metric}"] = paired.improvement(key, baseline, task.name, metric,
                                                                                higher)
            entry["gain"][f"{RANKING_KEY}.ndcg"] = paired.improvement(key, baseline, RANKING_KEY, "ndcg", True)


def evaluate_all(config: ExperimentConfig, runs: dict[str, dict[str, Any]], spark=None, log=print) -> dict[str, Any]:
    """Score every run on the test day's rows (evaluation's scoring core: one streamed pass, the first run's
    labels); per run, per model across seeds, and the seesaw table."""
    options = ScoringOptions(config.batch_size_eval, config.resolved_device, config.calibration_bins, config.reader,
                             config.uncertainty, config.ranking)
    models = _load_runs(config, runs, options, spark)
    snapshot = resolve_date_snapshot(config.table_path, config.test_date, partition_column=config.partition_column)
    started = time.perf_counter()
    day, keyed = score_snapshot(snapshot, list(models.items()), options, spark)
    failed = {key: scored.error for key, scored in keyed if scored.error}
    if failed:
        raise EvaluationFailed(f"runs that cannot be scored on {snapshot.date}: {failed}")
    paired, task_metrics = paired_scores(keyed, day, options)
    predict_seconds = time.perf_counter() - started
    paired.compute()
    log(f"experiment: scored {len(models)} runs on {day.rows} rows in {predict_seconds:.0f} s, intervals in "
        f"{sum(paired.seconds.values()):.0f} s")
    per_run = {key: {"tasks": task_metrics[key], "gates": _gate_summary(scored.gates),
                     "parameters": _parameters(scored.model), "run": runs[key],
                     "calibration": scored.model.calibration_source} for key, scored in keyed}
    spec = keyed[0][1].model.spec
    _add_gains(per_run, paired, spec)
    summary = summarise(config, spec, per_run)
    return {"format": EXPERIMENT_FORMAT, "snapshot": snapshot.summary(), "runs": per_run, "models": summary,
            "uncertainty": paired.settings_record(), "spec": spec.model_dump(mode="json"),
            "seconds": {"predict": round(predict_seconds, 1), **paired.settings_record()["seconds"]}}


def run(config: ExperimentConfig, spark=None, log=print) -> dict[str, Any]:
    """`ple experiment`'s stage: train (or reuse) every run; unless train_only, score them all and write the
    outputs. Returns {"runs", "record" (None when train_only), "paths"}."""
    from ple_runtime.config import config_as_dict
    from ple_runtime.lineage import run_context

    runs = train_all(config, log)
    if config.train_only:
        return {"runs": runs, "record": None, "paths": {}}
    record = evaluate_all(config, runs, spark, log)
    record["config"] = config_as_dict(config)
    record["context"] = run_context()
    return {"runs": runs, "record": record, "paths": write_outputs(config, record)}


def figure_names(spec) -> list[tuple[str, str, bool]]:
    """(task, metric, higher_is_better) of the seesaw table's columns: each task's Eq. 11 metric, GAUC, NDCG."""
    names = []
    for task in spec.tasks:
        metric, higher = GAIN_METRIC[task.type]
        names.append((task.name, metric, higher))
        if task.type == "binary":
            names.append((task.name, "gauc", True))
    names.append((RANKING_KEY, "ndcg", True))
    return names


def _figure(entry: dict[str, Any], task: str, metric: str) -> float | None:
    if task == RANKING_KEY:
        return (entry.get("ranking") or {}).get(metric)
    return (entry["tasks"].get(task) or {}).get(metric)


def summarise(config, spec, per_run: dict[str, dict[str, Any]]) -> dict[str, Any]:
    level = config.uncertainty.level
    models: dict[str, Any] = {}
    for model in config.models:
        keys = [run_key(model, s) for s in config.seeds if run_key(model, s) in per_run]
        if not keys:
            continue
        entry: dict[str, Any] = {"seeds": [int(k.split("/seed")[1]) for k in keys],
                                 "parameters": per_run[keys[0]]["parameters"], "figures": {}, "gains": {},
                                 "calibration": {}}
        for task, metric, _ in figure_names(spec):
            values = [_figure(per_run[k], task, metric) for k in keys]
            within = [((per_run[k]["tasks"].get(task) or {}).get("intervals") or {}).get(metric)
                      if task != RANKING_KEY else (per_run[k].get("ranking") or {}).get("interval") for k in keys]
            widths = [w["high"] - w["low"] for w in within if w and w.get("low") is not None]
            entry["figures"][f"{task}.{metric}"] = {**_mean_sd(values),
                                                    "mean_interval_width": float(np.mean(widths)) if widths else None}
            gains = [per_run[k]["gain"].get(f"{task}.{metric}") for k in keys]
            gains = [g for g in gains if g and g.get("improvement") is not None]
            if gains:
                improvements = [g["improvement"] for g in gains]
                entry["gains"][f"{task}.{metric}"] = {
                    **_mean_sd(improvements), "across_seeds": _t_interval(improvements, level),
                    "significant_up": sum(1 for g in gains if g["significant"] and g["improvement"] > 0),
                    "significant_down": sum(1 for g in gains if g["significant"] and g["improvement"] < 0),
                    "seeds": len(gains)}
        for task in spec.tasks:
            entry["calibration"][task.name] = _mean_sd([(per_run[k]["tasks"].get(task.name) or {}).get("calibration")
                                                        for k in keys])
        gates = [per_run[k]["gates"] for k in keys if per_run[k]["gates"]]
        if gates:
            entry["gates"] = [{gate: {field: float(np.mean([g[level_index][gate][field] for g in gates]))
                                      for field in ("own", "shared", "other", "normalized_entropy")}
                               for gate in gates[0][level_index]} for level_index in range(len(gates[0]))]
        models[model] = entry
    return models


# --- outputs -------------------------------------------------------------------------------

def _pm(figure: dict[str, Any], digits: int = 4) -> str:
    if figure.get("mean") is None:
        return "n/a"
    sd = f" ± {figure['sd']:.{digits}f}" if figure.get("sd") is not None else ""
    return f"{figure['mean']:.{digits}f}{sd}"


def _gain_text(gain: dict[str, Any] | None, digits: int = 4) -> str:
    if not gain or gain.get("mean") is None:
        return ""
    across = gain.get("across_seeds")
    interval = f" [{across['low']:+.{digits}f}, {across['high']:+.{digits}f}]" if across else ""
    mark = "**" if across and across["significant"] else ""
    counts = f" ({gain['significant_up']}↑ {gain['significant_down']}↓ of {gain['seeds']})"
    return f"{mark}{gain['mean']:+.{digits}f}{interval}{mark}{counts}"


def seesaw_markdown(record: dict[str, Any]) -> str:
    """Two tables: every figure per model (mean ± sd over seeds), then its gain over the single-task runs."""
    from ple_model import ModelSpec

    spec = ModelSpec.model_validate(record["spec"])
    names = figure_names(spec)
    level = record["uncertainty"]["level"]
    columns = " | ".join(f"{t} {m.upper()}" for t, m, _ in names)
    order = [m for m in (record.get("config") or {}).get("models", []) if m in record["models"]]
    models = {m: record["models"][m] for m in order or record["models"]}
    lines = [f"| model (parameters) | {columns} |", "|" + " --- |" * (len(names) + 1)]
    for model, entry in models.items():
        cells = [_pm(entry["figures"][f"{task}.{metric}"]) for task, metric, _ in names]
        lines.append(f"| {model} ({entry['parameters']:,}) | " + " | ".join(cells) + " |")
    lines += ["", f"| gain over single_task | {columns} |", "|" + " --- |" * (len(names) + 1)]
    for model, entry in models.items():
        if entry["gains"]:
            cells = [_gain_text(entry["gains"].get(f"{task}.{metric}")) for task, metric, _ in names]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    seeds = max((len(e["seeds"]) for e in record["models"].values()), default=0)
    snapshot = record["snapshot"]
    lines.append("")
    lines.append(f"Test day {snapshot['partition_column']}={snapshot['date']} ({snapshot['rows']} rows, table "
                 f"version {snapshot['version']}). Figures: mean ± sd over {seeds} seeds. Gains: Eq. 11 against the "
                 f"single_task run of the same seed (MSE reversed: positive = better), mean [{level:.0%} t interval "
                 "over seeds] (**bold** when it excludes 0); ↑/↓ = seeds whose own paired "
                 f"{level:.0%} interval on the test day excludes 0 (DeLong for AUC, bootstrap over rows for MSE, "
                 "over users for GAUC/NDCG).")
    return "\n".join(lines)


def _seesaw_section(record: dict[str, Any], names: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """Per model: every figure (mean ± sd over seeds) with its gain; coloured where the t interval excludes 0."""
    from evaluation.report import table_cell

    level = record["uncertainty"]["level"]
    rows = []
    for model, entry in record["models"].items():
        row = [table_cell(model), table_cell(entry["parameters"])]
        for task, metric, _ in names:
            gain = _gain_text(entry["gains"].get(f"{task}.{metric}"))
            css = None
            across = (entry["gains"].get(f"{task}.{metric}") or {}).get("across_seeds")
            if across and across["significant"]:
                css = "good" if across["low"] > 0 else "bad"
            row.append({"text": _pm(entry["figures"][f"{task}.{metric}"]) + (f" | gain {gain}" if gain else ""),
                        "cls": css})
        rows.append(row)
    snapshot = record["snapshot"]
    return {"title": "Seesaw table", "images": [], "table": {
        "header": ["model", "parameters", *[f"{t} {m}" for t, m, _ in names]], "rows": rows},
        "note": f"test day {snapshot['partition_column']}={snapshot['date']} (version {snapshot['version']}, "
                f"{snapshot['rows']} rows). Mean ± sd over seeds; gain against single_task of the same seed, "
                f"[{level:.0%} t interval over seeds]; ↑/↓ = seeds whose paired {level:.0%} interval on the test "
                "day excludes 0."}


def _runs_section(record: dict[str, Any], names: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """Every run's figures with their intervals, and its gain over single_task with the paired interval."""
    from evaluation.report import table_cell

    level = record["uncertainty"]["level"]
    run_rows = []
    for key, entry in record["runs"].items():
        for task, metric, _ in names:
            value = _figure(entry, task, metric)
            interval = (((entry["tasks"].get(task) or {}).get("intervals") or {}).get(metric) if task != RANKING_KEY
                        else (entry.get("ranking") or {}).get("interval")) or {}
            gain = entry["gain"].get(f"{task}.{metric}") or {}
            run_rows.append([table_cell(key), table_cell(f"{task}.{metric}"), table_cell(value),
                             table_cell(f"[{interval['low']:.4f}, {interval['high']:.4f}]"
                                        if interval.get("low") is not None else ""),
                             table_cell(gain.get("improvement")),
                             table_cell(f"[{gain['low']:+.4f}, {gain['high']:+.4f}]{'*' if gain['significant'] else ''}"
                                        if gain.get("low") is not None else "")])
    return {"title": "Every run", "images": [], "table": {
        "header": ["run", "figure", "value", f"{level:.0%} interval", "gain vs single_task", "paired interval"],
        "rows": run_rows}}


def _gate_section(record: dict[str, Any]) -> dict[str, Any] | None:
    """Gate usage per model, level and gate (mean over seeds); None for models without gates."""
    from evaluation.report import table_cell

    gate_rows = []
    for model, entry in record["models"].items():
        for level_index, gates in enumerate(entry.get("gates") or []):
            for gate, usage in gates.items():
                gate_rows.append([table_cell(model), table_cell(level_index + 1), table_cell(gate),
                                  table_cell(usage["own"]), table_cell(usage["shared"]), table_cell(usage["other"]),
                                  table_cell(usage["normalized_entropy"])])
    if not gate_rows:
        return None
    return {"title": "Gate diagnostics (mean over seeds)", "images": [], "table": {
        "header": ["model", "level", "gate", "weight on own experts", "on shared", "on others",
                   "normalized entropy"], "rows": gate_rows},
        "note": "MMoE's experts are all shared; PLE/CGC task gates may only mix their own and the shared "
                "experts; PLE's shared gate (levels before the last) mixes every expert, its own being the "
                "shared ones."}


def _calibration_section(record: dict[str, Any]) -> dict[str, Any]:
    from evaluation.report import table_cell

    calibration_rows = [[table_cell(model), table_cell(task), table_cell(_pm(figure))]
                        for model, entry in record["models"].items() for task, figure in entry["calibration"].items()]
    return {"title": "Calibration (mean prediction / observed, mean ± sd over seeds)", "images": [],
            "table": {"header": ["model", "task", "ratio"], "rows": calibration_rows}}


def experiment_report(record: dict[str, Any]) -> str:
    """The experiment's self-contained HTML: seesaw table, every run, gate diagnostics, calibration."""
    from ple_model import ModelSpec

    from evaluation.report import render_html

    names = figure_names(ModelSpec.model_validate(record["spec"]))
    sections = [_seesaw_section(record, names), _runs_section(record, names), _gate_section(record),
                _calibration_section(record)]
    snapshot = record["snapshot"]
    return render_html(f"Experiment on {snapshot['partition_column']}={snapshot['date']}",
                       [section for section in sections if section is not None])


def write_outputs(config, record: dict[str, Any]) -> dict[str, Path]:
    from ple_runtime.lineage import write_json

    out = Path(config.out_path)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(out / "experiment.json", record)}
    paths["markdown"] = out / "seesaw.md"
    paths["markdown"].write_text(seesaw_markdown(record) + "\n")
    paths["html"] = out / "report.html"
    paths["html"].write_text(experiment_report(record))
    return paths
