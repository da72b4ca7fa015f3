"""Plots (matplotlib, Agg) and the self-contained HTML report of an evaluation.

Every figure is embedded as `<img src="data:image/png;base64,...">`, so the
report is one file that opens anywhere (no side files, no network).

Figures:
- seesaw: for each pair of tasks, one point per model (candidate, production,
  compared models, the single-task baselines), each axis that task's Eq. 11
  metric; MSE axes are inverted so up and right are always better. A model
  above and to the right of the single-task point has no seesaw.
- per-task metric bars (the Eq. 11 metric of every model);
- calibration curves (mean prediction vs observed value per equal-count bin);
- gate heatmaps of gated models (mean weight per gate per expert, per level;
  experts a gate cannot mix are left blank).
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ple_model import ModelSpec  # noqa: E402
from ple_model.metrics import GAIN_METRIC  # noqa: E402

KIND_STYLE = {"candidate": ("tab:red", "o"), "production": ("tab:blue", "s"), "compare": ("tab:gray", "^"),
              "single_task": ("black", "X")}


def figure_to_base64(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _axis_label(spec: ModelSpec, task: str) -> tuple[str, bool]:
    metric, higher_is_better = GAIN_METRIC[spec.task(task).type]
    return f"{task} {metric.upper()} ({'higher' if higher_is_better else 'lower'} is better)", higher_is_better


def seesaw_figure(spec: ModelSpec, points: list[dict[str, Any]]):
    tasks = [t for t in spec.task_names if any(_finite(p["metrics"].get(t)) for p in points)]
    pairs = list(itertools.combinations(tasks, 2))
    if not pairs:
        return None
    columns = min(3, len(pairs))
    rows = math.ceil(len(pairs) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows), squeeze=False)
    for axis, (x_task, y_task) in zip(axes.flat, pairs):
        for point in points:
            x, y = point["metrics"].get(x_task), point["metrics"].get(y_task)
            if not (_finite(x) and _finite(y)):
                continue
            color, marker = KIND_STYLE.get(point["kind"], ("tab:green", "D"))
            axis.scatter([x], [y], color=color, marker=marker, s=60, zorder=3)
            axis.annotate(point["label"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        x_label, x_up = _axis_label(spec, x_task)
        y_label, y_up = _axis_label(spec, y_task)
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        if not x_up:
            axis.invert_xaxis()
        if not y_up:
            axis.invert_yaxis()
        axis.margins(0.25)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(pairs):]:
        axis.axis("off")
    figure.suptitle("Seesaw: one point per model (up and right = better on both tasks)")
    figure.tight_layout()
    return figure


def metric_bars_figure(spec: ModelSpec, points: list[dict[str, Any]]):
    tasks = spec.task_names
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes.flat, tasks):
        labels, values, colors = [], [], []
        for point in points:
            value = point["metrics"].get(task)
            if _finite(value):
                labels.append(point["label"])
                values.append(value)
                colors.append(KIND_STYLE.get(point["kind"], ("tab:green", ""))[0])
        axis.bar(range(len(values)), values, color=colors)
        axis.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
        label, _ = _axis_label(spec, task)
        axis.set_title(label, fontsize=9)
        if values:
            low, high = min(values), max(values)
            pad = (high - low) * 0.5 or abs(high) * 0.05 or 0.01
            axis.set_ylim(low - pad, high + pad)
            for index, value in enumerate(values):
                axis.text(index, value, f"{value:.4f}", ha="center", va="bottom", fontsize=7)
    figure.tight_layout()
    return figure


def calibration_figure(spec: ModelSpec, entries: list[tuple[str, str, dict[str, Any]]]):
    """entries: (label, kind, tasks metrics) per model."""
    tasks = spec.task_names
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes.flat, tasks):
        low, high = math.inf, -math.inf
        for label, kind, metrics in entries:
            curve = (metrics.get(task) or {}).get("calibration_curve") or {}
            x, y = curve.get("mean_prediction") or [], curve.get("observed") or []
            if not x:
                continue
            color, marker = KIND_STYLE.get(kind, ("tab:green", "D"))
            axis.plot(x, y, marker=marker, color=color, label=label, markersize=4)
            low, high = min(low, *x, *y), max(high, *x, *y)
        if math.isfinite(low):
            axis.plot([low, high], [low, high], linestyle="--", color="lightgray", label="perfect")
        axis.set_xlabel("mean prediction (bin)")
        axis.set_ylabel("observed (bin)")
        axis.set_title(f"{task} calibration", fontsize=9)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def gate_heatmap_figure(label: str, gates: list[dict[str, dict[str, Any]]]):
    levels = len(gates)
    figure, axes = plt.subplots(1, levels, figsize=(max(4.5, 1.0 + 0.7 * _max_experts(gates)) * levels, 3.8),
                                squeeze=False)
    for axis, (level_index, level) in zip(axes.flat, enumerate(gates)):
        gate_names = list(level)
        experts = list(dict.fromkeys(e for usage in level.values() for e in usage["mean_weight"]))
        experts = [e for e in experts if not e.startswith("shared/")] + [e for e in experts if e.startswith("shared/")]
        matrix = np.full((len(gate_names), len(experts)), np.nan)
        for row, gate in enumerate(gate_names):
            for column, expert in enumerate(experts):
                if expert in level[gate]["mean_weight"]:
                    matrix[row, column] = level[gate]["mean_weight"][expert]
        image = axis.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for row in range(len(gate_names)):
            for column in range(len(experts)):
                if not math.isnan(matrix[row, column]):
                    axis.text(column, row, f"{matrix[row, column]:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if matrix[row, column] < 0.5 else "black")
        axis.set_xticks(range(len(experts)), experts, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(len(gate_names)),
                        [f"{g} (H={level[g]['normalized_entropy']:.2f})" for g in gate_names], fontsize=8)
        axis.set_title(f"level {level_index + 1}", fontsize=9)
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(f"Gate weights: {label} (H = normalized entropy; blank = expert not mixed by that gate)",
                    fontsize=9)
    figure.tight_layout()
    return figure


def _max_experts(gates) -> int:
    return max((len({e for u in level.values() for e in u["mean_weight"]}) for level in gates), default=1)


def _date_axis(axis, title: str) -> None:
    """One task's panel of a per-date figure: its title, slanted dates, a light grid."""
    axis.set_title(title, fontsize=9)
    axis.tick_params(axis="x", rotation=45, labelsize=7)
    axis.grid(alpha=0.3)


def _titled(figure, title: str):
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def time_series_figure(rows: list[dict[str, Any]], spec_tasks: dict[str, str], title: str):
    """Backfill: one subplot per task, the Eq. 11 metric per date (rows: dt, task, auc/mse/...)."""
    tasks = sorted({r["task"] for r in rows})
    figure, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.4), squeeze=False)
    for axis, task in zip(axes.flat, tasks):
        metric = spec_tasks.get(task) or ("auc" if any(_finite(r.get("auc")) for r in rows if r["task"] == task)
                                          else "mse")
        points = sorted((r["dt"], r.get(metric)) for r in rows if r["task"] == task and _finite(r.get(metric)))
        if points:
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        _date_axis(axis, f"{task} {metric.upper()}")
    return _titled(figure, title)


def health_over_time_figure(rows: list[dict[str, Any]], title: str):
    """Backfill: per task, calibration (mean prediction / observed) with its interval, and the
    prediction PSI against the validation day (right axis), per date."""
    tasks = sorted({r["task"] for r in rows})
    figure, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.4), squeeze=False)
    for axis, task in zip(axes.flat, tasks):
        points = sorted((r["dt"], r["calibration"], r.get("calibration_low"), r.get("calibration_high"))
                        for r in rows if r["task"] == task and _finite(r.get("calibration")))
        if points:
            low = [p[1] - p[2] if _finite(p[2]) else 0.0 for p in points]
            high = [p[3] - p[1] if _finite(p[3]) else 0.0 for p in points]
            axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[low, high], marker="o", capsize=3)
        axis.axhline(1.0, color="#999", linewidth=0.8)
        drift = sorted((r["dt"], r["prediction_psi"]) for r in rows
                       if r["task"] == task and _finite(r.get("prediction_psi")))
        if drift:
            twin = axis.twinx()
            twin.plot([d[0] for d in drift], [d[1] for d in drift], color="#c60", marker="s", linestyle="--")
            twin.set_ylabel("prediction PSI", fontsize=8, color="#c60")
        _date_axis(axis, f"{task} calibration")
    return _titled(figure, title)


# --- HTML -------------------------------------------------------------------------------

REPORT_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
 body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
 table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
 th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 .bad { color: #b00; } .good { color: #070; } .note { color: #666; font-size: 0.9em; }
 img { max-width: 100%; margin: 0.5em 0 1.5em; }
</style></head><body>
<h1>{{ title }}</h1>
{% for section in sections %}
<h2>{{ section.title }}</h2>
{% if section.note %}<p class="note">{{ section.note }}</p>{% endif %}
{% if section.table %}
<table><tr>{% for h in section.table.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in section.table.rows %}<tr>{% for cell in row %}<td{% if cell.cls %} class="{{ cell.cls }}"{% endif %}>{{ cell.text }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endif %}
{% for image in section.images %}<img alt="{{ section.title }}" src="data:image/png;base64,{{ image }}">
{% endfor %}
{% endfor %}
</body></html>
"""


def table_cell(value: Any, cls: str | None = None) -> dict[str, Any]:
    if isinstance(value, float):
        text = "n/a" if not math.isfinite(value) else (f"{value:.5f}" if abs(value) < 1000 else f"{value:.0f}")
    elif value is None:
        text = "n/a"
    else:
        text = str(value)
    return {"text": text, "cls": cls}


def _number(value: Any) -> str:
    return table_cell(value)["text"]


def _interval_cell(interval: dict[str, Any] | None) -> dict[str, Any]:
    if not interval or interval.get("low") is None:
        return table_cell("")
    return table_cell(f"[{interval['low']:.5f}, {interval['high']:.5f}]")


def _improvement_cells(change: dict[str, Any]) -> list[dict[str, Any]]:
    """[improvement (marked * when its interval excludes 0), interval]."""
    value = change.get("improvement")
    if value is None or not math.isfinite(value):
        return [table_cell(None), table_cell("")]
    mark = "*" if change.get("significant") else ""
    css = "good" if value > 0 else "bad" if value < 0 else None
    text = f"{value:+.5f}{mark}"
    bounds = (f"[{change['low']:+.5f}, {change['high']:+.5f}]" if change.get("low") is not None else "")
    return [{"text": text, "cls": css}, table_cell(bounds)]


def _methods_note(record: dict[str, Any]) -> str:
    uncertainty = record.get("uncertainty") or {}
    methods = uncertainty.get("methods") or {}
    text = "; ".join(f"{k}: {v}" for k, v in methods.items())
    return f"{text} ({uncertainty.get('bootstrap_resamples')} resamples)" if text else "none"


def render_html(title: str, sections: list[dict[str, Any]]) -> str:
    import jinja2

    environment = jinja2.Environment(autoescape=True)
    return environment.from_string(REPORT_TEMPLATE).render(title=title, sections=sections)


def evaluation_report(record: dict[str, Any], points: list[dict[str, Any]]) -> str:
    """The HTML report of one evaluation record (evaluation.evaluate), one section builder per part."""
    spec = ModelSpec.model_validate(record["spec"])
    snapshot, candidate = record["snapshot"], record["model"]
    level = (record.get("uncertainty") or {}).get("level", 0.95)
    sections = [*_evaluated_section(record), *_metrics_section(record, spec, level),
                *_gain_section(record, level), *_ranking_section(record, level), *_calibration_change_section(record),
                *_figure_sections(record, spec, points), *_gates_section(record), *_errors_section(record)]
    title = f"Evaluation of {candidate['label']} on {snapshot['partition_column']}={snapshot['date']}"
    return render_html(title, sections)


def _shown_production(record: dict[str, Any]) -> dict[str, Any] | None:
    production = record.get("production")
    return production if production and not production["error"] else None


def _evaluated_section(record: dict[str, Any]) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    snapshot, candidate, production = record["snapshot"], record["model"], record.get("production")
    sections.append({"title": "What was evaluated", "images": [], "table": {
        "header": ["item", "value"],
        "rows": [[table_cell(k), table_cell(v)] for k, v in [
            ("model", f"{candidate['label']} ({candidate['identity']['model_name']}, {candidate['model_id']})"),
            ("table", snapshot["table"]), ("date", f"{snapshot['partition_column']}={snapshot['date']}"),
            ("table version", f"{snapshot['version']} (chosen by {snapshot['chosen_by']}; latest "
                              f"{snapshot.get('latest_version')})"),
            ("rows", snapshot.get("rows")),
            ("published model", production["label"] if production else (record.get("production_note") or "none")),
        ]]}})
    return sections


def _metrics_section(record: dict[str, Any], spec: ModelSpec, level: float) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    candidate, production = record["model"], _shown_production(record)
    header = ["task", "metric", candidate["label"], f"{level:.0%} interval"]
    header += [production["label"], "improvement", f"{level:.0%} interval"] if production else []
    rows = []
    for task in spec.tasks:
        metrics = candidate["tasks"].get(task.name, {})
        keys = (["auc", "gauc", "logloss", "ece", "calibration", "observed_rate", "mean_prediction", "count",
                 "positives"] if task.type == "binary"
                else ["mse", "mae", "ece", "calibration", "mean_label", "mean_prediction", "count"])
        for key in keys:
            row = [table_cell(task.name), table_cell(key), table_cell(metrics.get(key)),
                   _interval_cell((metrics.get("intervals") or {}).get(key))]
            if production:
                row.append(table_cell((production["tasks"].get(task.name) or {}).get(key)))
                compared = (record.get("production_comparison") or {}).get(task.name, {}).get(key)
                row += _improvement_cells(compared) if compared else [table_cell(""), table_cell("")]
            rows.append(row)
    sections.append({"title": "Per-task metrics (inside each task's sample space)", "images": [],
                     "table": {"header": header, "rows": rows},
                     "note": f"{level:.0%} confidence intervals: {_methods_note(record)}. improvement = candidate "
                             "better than the published model by this much (AUC/GAUC: higher is better; logloss "
                             "and MSE: lower is better); * = its interval excludes 0 (significant). GAUC: AUC "
                             "within each user, weighted by the user's impressions; users with one class are "
                             "skipped."})
    return sections


def _gain_section(record: dict[str, Any], level: float) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    candidate = record["model"]
    gain = record.get("mtl_gain")
    if gain:
        gain_rows = []
        for t, g in gain["gain"].items():
            interval = (gain.get("interval") or {}).get(t)
            gain_rows.append([table_cell(t), table_cell(gain["metric"].get(t)), table_cell(candidate["tasks"][t].get(gain["metric"][t])),
                              table_cell(gain["single_task_metric"].get(t)), table_cell(gain["single_task_model"].get(t)),
                              *_improvement_cells({"improvement": g, **(interval or {})})])
            gauc = (gain.get("gauc_gain") or {}).get(t)
            if gauc and gauc.get("improvement") is not None:
                mine = candidate["tasks"][t].get("gauc")
                gain_rows.append([table_cell(t), table_cell("gauc"), table_cell(mine), table_cell(mine - gauc["difference"]),
                                  table_cell(gain["single_task_model"].get(t)), *_improvement_cells(gauc)])
        ranking_gain = gain.get("ranking_gain")
        if ranking_gain:
            system = gain.get("single_task_system_ranking") or {}
            gain_rows.append([table_cell("ranking score"), table_cell(f"ndcg@{system.get('k')}"),
                              table_cell((candidate.get("ranking") or {}).get("ndcg")), table_cell(system.get("ndcg")),
                              table_cell("single-task system"), *_improvement_cells(ranking_gain)])
        sections.append({"title": "MTL gain (Eq. 11) against single-task models", "images": [],
                         "table": {"header": ["task", "metric", "multi-task", "single-task", "baseline model", "gain",
                                              f"{level:.0%} interval"], "rows": gain_rows},
                         "note": "positive gain on every task = no seesaw; * = the interval excludes 0 (a "
                                 "significant gain or loss on these rows; training noise across seeds is not in it: "
                                 "see `ple experiment`). Tasks without a baseline: "
                                 f"{', '.join(gain['tasks_without_baseline']) or 'none'}."})
    else:
        sections.append({"title": "MTL gain (Eq. 11) against single-task models", "images": [], "table": None,
                         "note": "no single-task runs were given (--single-task-runs), so no gain is computed."})
    return sections


def _ranking_section(record: dict[str, Any], level: float) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    candidate, production = record["model"], _shown_production(record)
    ranking_rows = []
    for entry in [candidate, production, *(record.get("compare") or [])]:
        ranking = (entry or {}).get("ranking") or {}
        if ranking.get("ndcg") is not None:
            ranking_rows.append([table_cell(entry["label"]), table_cell(ranking["ndcg"]), _interval_cell(ranking.get("interval")),
                                 table_cell(ranking.get("users")), table_cell(ranking.get("users_skipped"))])
    settings = (record.get("uncertainty") or {}).get("ranking") or {}
    if ranking_rows:
        sections.append({"title": f"Ranking score: NDCG@{settings.get('k')} per user", "images": [],
                         "table": {"header": ["model", "NDCG", f"{level:.0%} interval", "users",
                                              "users skipped (no utility)"], "rows": ranking_rows},
                         "note": f"score = prod_k p_k^w_k with weights {settings.get('weights')}; utility = "
                                 f"{' + '.join(f'{w:g}*{c}' for c, w in (settings.get('utility') or {}).items())}; "
                                 "ties in score ranked pessimistically."})
    elif settings.get("note"):
        sections.append({"title": "Ranking score", "images": [], "table": None, "note": settings["note"]})
    return sections


def _calibration_change_section(record: dict[str, Any]) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    candidate = record["model"]
    calibration_rows = []
    for entry in [candidate, *(record.get("single_task") or []), *(record.get("compare") or [])]:
        calibration = (entry or {}).get("calibration")
        for task, change in ((calibration or {}).get("tasks") or {}).items():
            before, after = change["before"], change["after"]
            loss = "logloss" if "logloss" in after else "mse"
            calibration_rows.append([table_cell(entry["label"]), table_cell(task), table_cell(before.get("ece")),
                                     table_cell(after.get("ece")), table_cell(before.get("calibration")),
                                     table_cell(after.get("calibration")), table_cell(f"{loss} {_number(before.get(loss))}"),
                                     table_cell(f"{loss} {_number(after.get(loss))}")])
    if calibration_rows:
        source = candidate.get("calibration") or {}
        fitted_on = source.get("fitted_on") or {}
        sections.append({"title": "Post-hoc calibration: before / after", "images": [],
                         "table": {"header": ["model", "task", "ECE before", "ECE after", "mean pred / observed before",
                                              "after", "loss before", "loss after"], "rows": calibration_rows},
                         "note": f"method {source.get('method')}; "
                                 + (f"fitted on {fitted_on.get('partition_column')}={fitted_on.get('date')} version "
                                    f"{fitted_on.get('version')}" if fitted_on else "carried by the model file")
                                 + ". ECE over equal-count bins of the prediction."})
    return sections


def _figure_sections(record: dict[str, Any], spec: ModelSpec, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    candidate, production = record["model"], _shown_production(record)
    seesaw = seesaw_figure(spec, points)
    sections.append({"title": "Seesaw", "images": [figure_to_base64(seesaw)] if seesaw else [], "table": None,
                     "note": None if seesaw else "one task only: nothing to trade off."})
    sections.append({"title": "Per-task metric by model", "images": [figure_to_base64(metric_bars_figure(spec, points))],
                     "table": None})
    calibration_entries = [(candidate["label"], "candidate", candidate["tasks"])]
    if production:
        calibration_entries.append((production["label"], "production", production["tasks"]))
    sections.append({"title": "Calibration", "images": [figure_to_base64(calibration_figure(spec,
                                                                                        calibration_entries))],
                     "table": None, "note": "equal-count bins of the prediction; on the dashed line = calibrated."})
    return sections


def _gates_section(record: dict[str, Any]) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    candidate, production = record["model"], record.get("production")
    gated = [(e["label"], e["gates"]) for e in [candidate, production, *(record.get("compare") or [])]
             if e and e.get("gates")]
    if gated:
        images = [figure_to_base64(gate_heatmap_figure(label, gates)) for label, gates in gated]
        entropy_rows = [[table_cell(label), table_cell(level_index + 1), table_cell(gate), table_cell(usage["entropy"]),
                         table_cell(usage["normalized_entropy"])]
                        for label, gates in gated for level_index, level in enumerate(gates)
                        for gate, usage in level.items()]
        sections.append({"title": "Gates: expert use per task per level", "images": images,
                         "table": {"header": ["model", "level", "gate", "entropy (nats)", "normalized entropy"],
                                   "rows": entropy_rows},
                         "note": "PLE/CGC keep experts apart: a task gate leans on its own and the shared experts; "
                                 "normalized entropy 1 = uniform mixing, 0 = one expert."})
    return sections


def _errors_section(record: dict[str, Any]) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    production = record.get("production")
    errors = [(e["label"], e["error"]) for e in [production, *(record.get("single_task") or []),
                                                 *(record.get("compare") or [])] if e and e.get("error")]
    if errors:
        sections.append({"title": "Models that could not be scored", "images": [], "table": {
            "header": ["model", "error"], "rows": [[table_cell(l), table_cell(e)] for l, e in errors]}})
    return sections
