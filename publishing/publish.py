"""What `ple publish` does: evaluate, export, gate, register, move the alias.

Order, and why:
1. Pin the evaluation snapshot (table, date, version) and score the candidate
   (with a post-hoc calibration: the one its model.pt carries, or one fitted on
   `calibrate_on`; the bundle's model.pt and exports then carry and apply it)
   and the production model (the alias's version now) in ONE pass over the
   rows, streamed as `ple evaluate` streams them (evaluation/streaming.py: a
   batch of rows at a time; only labels, sample spaces and predictions kept,
   so memory does not grow with the day beyond those arrays).
2. Build the whole bundle in a temp folder (exports traced and checked against
   PyTorch on the day's first rows: one small batch, not the day).
   Slow, so it happens OUTSIDE the lease.
3. Under the publish lease (publishing.lease.publish_lease: held through
   the registry, so publishers on several hosts serialise): read the CURRENT
   production version (when another publisher moved the alias since step 1,
   score again, against the new one), run the gate, and
   only if it passes log the finished bundle in one `log_artifacts` call,
   register it as a new version and move the alias LAST. Two publishers
   therefore serialise on the gate: the second compares against what the
   first just published, and the alias only ever points at a complete version.
A failed gate registers nothing; the failures name the task, metric and margin.
If moving the alias fails after registering (or the publisher is killed there),
the new version stays complete but unaliased (harmless: nothing resolves to it),
the record says so and the job fails; a re-run of the same publish finds that
version (same model, snapshot and production version) and moves the alias to it
instead of registering a duplicate.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.config import EvaluationFailed
from evaluation.evaluate import ScoringOptions, paired_scores, score_snapshot
from evaluation.scoring import ModelScores, calibration_change, headline
from evaluation.snapshot_rows import iter_date_snapshot
from model_registry.bundle import export_vocabulary, model_vocabulary_version, write_manifest
from model_registry.model_refs import ResolvedModel, load_model_ref, load_or_fail
from model_registry.registry import RegistrySettings, move_alias, register_bundle, registry_settings, version_by_alias
from ple_model import model_inputs
from ple_model.calibration import attach_calibration
from ple_model.model_inputs import source_columns
from ple_runtime.config import config_as_dict
from ple_runtime.lake import Lake
from ple_runtime.lineage import code_version, run_context, write_json
from ple_runtime.snapshot import SnapshotError, resolve_date_snapshot

from .config import PublishConfig
from .export import EXPORT_ROWS, export_model
from .gate import GateEvidence, GateResult, base_rate_logloss, check_gate
from .lease import publish_lease


@dataclass
class PublishOutcome:
    status: str                        # "published" | "gate_failed" | "unchanged" | "gate_passed" (check only)
    version: str | None = None
    gate: GateResult | None = None
    record_path: Path | None = None
    messages: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def _training_config(candidate: ResolvedModel) -> dict[str, Any] | None:
    return (candidate.run_record or {}).get("config")


def build_bundle(bundle: Path, candidate: ResolvedModel, features, config, snapshot, spark=None) -> dict[str, Any]:
    """Everything but metrics.json and manifest.json (written under the lease, after the gate); `features`: the
    model inputs the exports are traced and checked on (export_rows)."""
    bundle.mkdir(parents=True, exist_ok=True)
    if candidate.calibration is not None:   # the bundle's model.pt carries the calibration it is served with
        attach_calibration(str(candidate.model_file), candidate.calibration, str(bundle / "model.pt"))
    else:
        shutil.copy2(candidate.model_file, bundle / "model.pt")
    export_info = export_model(candidate.loaded.model, candidate.spec, bundle, features,
                               tolerance=config.export_tolerance, exporter=config.onnx_exporter,
                               calibration=candidate.calibration)
    write_json(bundle / "export.json", export_info)
    write_json(bundle / "signature.json", export_info["signature"])
    candidate.spec.to_yaml(bundle / "spec.yaml")
    vocabulary_table = config.vocabulary_table or Lake(config.data_dir).vocabulary
    vocabulary = export_vocabulary(vocabulary_table, bundle / "vocabulary.parquet", spark,
                                   model_vocabulary_version(candidate.loaded.metadata, candidate.run_record))
    write_json(bundle / "config.json", {
        "model_name": candidate.loaded.model_name, "hyperparameters": candidate.loaded.hyperparameters,
        "training_config": _training_config(candidate), "publish_config": config_as_dict(config),
        "calibration": {**(candidate.calibration_source or {}), "fit_report": candidate.calibration.fit_report}
        if candidate.calibration is not None else None})
    lineage = {
        "evaluation_snapshot": snapshot.summary(),
        "training": {k: v for k, v in (candidate.run_record or {}).items()
                     if k in ("delta_version", "train_snapshot", "validation_snapshot", "code_version")}
                    or {k: v for k, v in (candidate.loaded.metadata or {}).items()
                        if k in ("snapshot", "validation_snapshot", "code")},
        "vocabulary": vocabulary,
        "source_model": candidate.identity(),
        "code_version": code_version(),
        "published_by": run_context(),
    }
    write_json(bundle / "lineage.json", lineage)
    return {"export": export_info, "lineage": lineage, "vocabulary": vocabulary}


def resolve_publish_snapshot(config, candidate: ResolvedModel):
    """--date (+ version/timestamp), or the exact snapshot a `ple evaluate` metrics.json read."""
    if config.metrics is None:
        return resolve_date_snapshot(config.table_path, config.date, version=config.version,
                                     timestamp=config.timestamp, partition_column=config.partition_column)
    path = Path(config.metrics)
    if not path.is_file():
        raise EvaluationFailed(f"--metrics {path} does not exist")
    evaluation = json.loads(path.read_text())
    evaluated = evaluation.get("model", {}).get("identity", {})
    if evaluated.get("sha256") != candidate.sha256:
        raise EvaluationFailed(f"--metrics {path} evaluated another model ({evaluated.get('model_file')}, sha256 "
                               f"{str(evaluated.get('sha256'))[:12]}) than {candidate.ref} ({candidate.sha256[:12]})")
    recorded = evaluation["snapshot"]
    if config.date is not None and config.date.isoformat() != recorded["date"]:
        raise EvaluationFailed(f"--date {config.date} differs from the date {recorded['date']} in --metrics {path}")
    return resolve_date_snapshot(recorded["table"], recorded["date"], version=recorded["version"],
                                 partition_column=recorded.get("partition_column", config.partition_column))


def gate_evidence(config, spec, paired, with_production: bool) -> GateEvidence:
    """The gate's statistical evidence on its rows (`paired`: the computed PairedScores of the candidate and,
    `with_production`, the production model, evaluation/comparison.py): the candidate's AUC intervals
    (DeLong), the logloss of the constant base-rate predictor per binary task, the paired intervals of the
    improvement over production, and, from the `ple evaluate` record (--metrics) when it has one, the paired
    interval against the single-task baseline."""
    from evaluation.comparison import REPORTED_METRICS

    evidence = GateEvidence()
    candidate_figures = paired.task_figures("candidate")
    for task in spec.tasks:
        intervals = candidate_figures.get(task.name, {}).get("intervals", {})
        if task.type == "binary":
            if intervals.get("auc"):
                evidence.auc_intervals[task.name] = intervals["auc"]
            in_space = np.asarray(paired.masks[task.name]).reshape(-1) > 0
            evidence.prior_logloss[task.name] = base_rate_logloss(np.asarray(paired.labels[task.name])[in_space])
        if with_production and task.name in paired.predictions.get("production", {}):
            evidence.production[task.name] = {
                metric: paired.improvement("candidate", "production", task.name, metric, higher)
                for metric, higher in REPORTED_METRICS[task.type].items() if metric != "gauc"}
    evidence.single_task = _single_task_evidence(config)
    return evidence


def _single_task_evidence(config) -> dict[str, dict[str, Any]]:
    """Per task: the paired interval of the improvement over the single-task baseline, from --metrics."""
    if config.metrics is None:
        return {}
    gain = json.loads(Path(config.metrics).read_text()).get("mtl_gain") or {}
    return {task: {**interval, "metric": gain.get("metric", {}).get(task)}
            for task, interval in (gain.get("interval") or {}).items() if interval.get("high") is not None}


@dataclass
class GateScores:
    """The candidate and the model at the alias, scored in one pass over the gate's rows (score_gate_rows)."""

    candidate: ModelScores
    evidence: GateEvidence
    production_version: Any = None                      # the registry's version at the alias, or None
    production: ResolvedModel | None = None
    production_tasks: dict[str, dict[str, Any]] | None = None
    scoring: dict[str, Any] = field(default_factory=dict)   # how the rows were read and what was kept

    @property
    def production_info(self) -> dict[str, Any] | None:
        """The published model's version, model_id and sha256 (None without one)."""
        if self.production is None:
            return None
        return {"version": str(self.production_version.version), "model_id": self.production.model_id,
                "sha256": self.production.sha256}

    def same_production(self, version) -> bool:
        """Whether `version` (the alias's now) is the one these scores compared against."""
        scored = self.production_version
        return (version is None and scored is None) or (
            version is not None and scored is not None and str(version.version) == str(scored.version))


def score_gate_rows(config, settings, candidate: ResolvedModel, snapshot, workdir: Path, spark) -> GateScores:
    """The candidate and the version at the alias, when there is one, scored in ONE pass over the snapshot by
    `ple evaluate`'s streaming core (evaluation/evaluate.py score_snapshot, paired_scores): a batch of rows at a
    time, keeping per row only the labels, sample spaces and both models' predictions (no user ids: the gate
    uses no per-user figure). Every model is judged on the candidate spec's sample spaces."""
    production_version = version_by_alias(settings, config.alias)
    production = None if production_version is None else load_model_ref(
        f"models:/{settings.model_name}/{production_version.version}", settings,
        workdir / f"production-v{production_version.version}", config.resolved_device)
    keyed_models = [("candidate", candidate)] + ([("production", production)] if production is not None else [])
    options = ScoringOptions.from_config(config)
    try:
        day, keyed = score_snapshot(snapshot, keyed_models, options, spark, per_user=False)
    except (KeyError, ValueError, SnapshotError) as error:
        raise EvaluationFailed(str(error).strip("'\"")) from None
    scored = dict(keyed)
    if production is not None and scored["production"].error:   # no gate against a model it cannot score
        raise EvaluationFailed(f"cannot score the published {settings.model_name} v{production_version.version} "
                               f"(@{config.alias}) on these rows: {scored['production'].error}")
    paired, task_metrics = paired_scores(keyed, day, options)
    paired.compute()
    mine = scored["candidate"]
    candidate_scores = ModelScores(task_metrics["candidate"], mine.gates, day.rows, mine.predictions,
                                   calibration_change(mine.raw_tasks, task_metrics["candidate"])
                                   if candidate.calibration is not None else None)
    return GateScores(candidate_scores, gate_evidence(config, candidate.spec, paired, production is not None),
                      production_version, production, task_metrics.get("production"),
                      {"rows_per_batch": day.rows_per_batch, "compact_bytes": day.compact_bytes,
                       "compact_bytes_per_row": round(day.compact_bytes / max(day.rows, 1), 1),
                       "spilled": day.spilled, "export_rows": EXPORT_ROWS})


def export_rows(snapshot, spec, config, spark=None) -> dict[str, np.ndarray] | None:
    """The day's first rows as model inputs (None for an empty day): the exports' example and check batches
    are cut from them (publishing/export.py), so one small batch is read, not the day."""
    batches = iter_date_snapshot(snapshot, source_columns(spec), EXPORT_ROWS, config.reader, spark)
    with closing(batches):
        first = next(batches, None)
    return None if first is None else model_inputs(first, spec).features


def check_only(config, candidate, scores: GateScores, snapshot) -> PublishOutcome:
    """The gate alone (read-only: no lease, no export, no registry writes)."""
    info = scores.production_info
    gate = check_gate(candidate.spec, scores.candidate.tasks, scores.production_tasks, config.tolerance, info,
                      scores.evidence, config.floors)
    record = {"format": "ple-publish/1", "candidate": candidate.identity(), "snapshot": snapshot.summary(),
              "candidate_metrics": scores.candidate.tasks, "production": info,
              "production_metrics": scores.production_tasks, "gate": gate.to_dict(),
              "gate_evidence": asdict(scores.evidence), "scoring": scores.scoring,
              "status": "gate_passed" if gate.passed else "gate_failed", "check_only": True}
    messages = ([f.message() for f in gate.failures] if not gate.passed else
                [f"quality gate passed against {'v' + info['version'] if info else 'no published model'} "
                 "(check only: nothing exported or registered)"])
    return _finish(config, record, PublishOutcome("gate_failed" if not gate.passed else "gate_passed", gate=gate,
                                                  messages=messages))


def run(config: PublishConfig, spark=None) -> PublishOutcome:
    """`ple publish`'s stage (also `ple pipeline`'s): run_publish with a temporary folder for the bundle."""
    with tempfile.TemporaryDirectory(prefix="ple-publish-") as workdir:
        return run_publish(config, Path(workdir), spark)


def run_publish(config: PublishConfig, workdir: Path, spark=None) -> PublishOutcome:
    settings: RegistrySettings = registry_settings(config.data_dir, config.tracking_uri, config.registered_model)
    candidate = load_or_fail(config.model, settings, workdir / "candidate", config.resolved_device)
    snapshot = resolve_publish_snapshot(config, candidate)
    if config.calibrate_on is not None:
        from evaluation.evaluate import calibrate_models

        calibrate_models([candidate], config.table_path, config.calibrate_on, ScoringOptions.from_config(config),
                         config.calibration_method, config.partition_column, spark)
    scores = score_gate_rows(config, settings, candidate, snapshot, workdir, spark)
    if config.check_only:
        return check_only(config, candidate, scores, snapshot)
    bundle = workdir / "bundle"
    built = build_bundle(bundle, candidate, export_rows(snapshot, candidate.spec, config, spark), config, snapshot,
                         spark)

    record: dict[str, Any] = {"format": "ple-publish/1", "candidate": candidate.identity(),
                              "snapshot": snapshot.summary(), "candidate_metrics": scores.candidate.tasks,
                              "export": built["export"], "registry": {"tracking_uri": settings.tracking_uri,
                                                                      "model": settings.model_name,
                                                                      "alias": config.alias},
                              "scoring": scores.scoring, "started_at": run_context()["started_at"]}
    with publish_lease(settings, config.lock_timeout_s, config.lease_ttl_s) as lease:
        record["lock"] = lease.record  # the lease fills in released_at when it deletes its ticket
        if not scores.same_production(version_by_alias(settings, config.alias)):   # moved since the pass
            scores = score_gate_rows(config, settings, candidate, snapshot, workdir, spark)
            record["rescored_against_new_production"] = True
        outcome = _publish_holding_lease(config, settings, lease, candidate, scores, snapshot, bundle, record)
    return _finish(config, record, outcome)


class PublishFailed(EvaluationFailed):  # a StageError: exit 1
    """A registry write failed after the gate passed; the record says what state the registry was left in."""


def _publish_holding_lease(config, settings, lease, candidate, scores: GateScores, snapshot, bundle: Path,
                           record: dict[str, Any]) -> PublishOutcome:
    production_version, production_info = scores.production_version, scores.production_info
    production_scores, candidate_scores = scores.production_tasks, scores.candidate
    if scores.production is not None and scores.production.sha256 == candidate.sha256:
        record["status"] = "unchanged"
        return PublishOutcome("unchanged", str(production_version.version),
                              messages=[f"the candidate is already {settings.model_name} "
                                        f"v{production_version.version} (@{config.alias}); nothing published"])
    evidence = scores.evidence
    gate = check_gate(candidate.spec, candidate_scores.tasks, production_scores, config.tolerance, production_info,
                      evidence, config.floors)
    record.update(production=production_info, production_metrics=production_scores, gate=gate.to_dict(),
                  gate_evidence=asdict(evidence))
    write_json(bundle / "metrics.json", {
        "snapshot": snapshot.summary(), "candidate": candidate_scores.tasks, "candidate_gates": candidate_scores.gates,
        "candidate_calibration_effect": candidate_scores.calibration_effect,
        "production": production_info, "production_metrics": production_scores, "gate": gate.to_dict()})
    write_manifest(bundle)
    if config.debug_hold_lock_until is not None:
        _hold_until(Path(config.debug_hold_lock_until), config.lock_timeout_s)
    if not gate.passed:
        record["status"] = "gate_failed"
        return PublishOutcome("gate_failed", gate=gate, messages=[f.message() for f in gate.failures])
    model_version = _register_candidate(settings, lease, candidate, candidate_scores, snapshot, bundle, record,
                                        production_info)
    try:
        lease.check()
        move_alias(settings, model_version.version, config.alias)  # last: the alias only sees complete versions
    except Exception as error:  # noqa: BLE001 (record the state the registry is left in, then fail)
        record["status"] = "alias_failed"
        message = (f"registered {settings.model_name} v{model_version.version} but could not move @{config.alias} "
                   f"to it ({type(error).__name__}: {error}); v{model_version.version} is complete but unaliased, "
                   f"@{config.alias} still points at "
                   f"{'v' + production_info['version'] if production_info else 'nothing'}; re-run the publish")
        _finish(config, record, PublishOutcome("alias_failed", str(model_version.version), gate=gate,
                                               messages=[message]))
        raise PublishFailed(message) from error
    record["status"] = "published"
    done = "completed the interrupted publish of" if record.get("completes_interrupted_publish") else "registered"
    return PublishOutcome("published", str(model_version.version), gate=gate,
                          messages=[f"{done} {settings.model_name} v{model_version.version} and moved "
                                    f"@{config.alias} to it"
                                    + (f" (was v{production_info['version']})" if production_info else "")])


def _register_candidate(settings: RegistrySettings, lease, candidate, candidate_scores, snapshot, bundle: Path,
                        record: dict[str, Any], production_info: dict[str, Any] | None):
    """Registers the bundle (or finds the version an interrupted publish registered) and records it."""
    tags = {"ple.model_sha256": candidate.sha256, "ple.model_name": candidate.loaded.model_name,
            "ple.eval_table": snapshot.table, "ple.eval_date": snapshot.date,
            "ple.eval_table_version": str(snapshot.version),
            "ple.code_commit": str(code_version().get("commit")), "ple.gate": "passed",
            "ple.calibration": candidate.calibration.method if candidate.calibration is not None else "none",
            "ple.replaces_version": str(production_info["version"]) if production_info else "none"}
    params = {"model_name": candidate.loaded.model_name, "source": candidate.ref,
              **{f"hp.{k}": v for k, v in candidate.loaded.hyperparameters.items()}}
    lease.check()
    model_version = interrupted_publish(settings, tags)
    if model_version is not None:   # registered by a publish that died before moving the alias: complete it
        record["completes_interrupted_publish"] = str(model_version.version)
    else:
        model_version = register_bundle(settings, bundle, tags=tags, params=params,
                                        metrics=headline(candidate_scores.tasks),
                                        description=f"{candidate.label} evaluated on {snapshot.table} "
                                                    f"{snapshot.partition_column}={snapshot.date} v{snapshot.version}")
    record.update(version=str(model_version.version), run_id=model_version.run_id)
    return model_version


def interrupted_publish(settings: RegistrySettings, tags: dict[str, str]):
    """A version registered for the same model, evaluation snapshot and production version that
    no alias points at: a publish killed between registering and moving the alias (its bundle
    is complete: a version is only registered after its one upload finished). None if none."""
    from model_registry.registry import client, list_versions

    versions = list_versions(settings)
    if not versions:
        return None
    aliased = set(map(str, client(settings).get_registered_model(settings.model_name).aliases.values()))
    same = ("ple.model_sha256", "ple.eval_table", "ple.eval_date", "ple.eval_table_version", "ple.replaces_version")
    for version in sorted(versions, key=lambda v: -int(v.version)):
        if str(version.version) not in aliased and all(version.tags.get(k) == tags[k] for k in same):
            return version
    return None


def _hold_until(path: Path, timeout_s: float) -> None:
    """Tests: keep holding the lease until `path` exists, so a second publisher provably has to wait."""
    deadline = time.time() + timeout_s
    while not path.exists() and time.time() < deadline:
        time.sleep(0.2)


def _finish(config, record: dict[str, Any], outcome: PublishOutcome) -> PublishOutcome:
    """Write the publish record (`lock`: the lease's record, when one was taken)."""
    record["messages"] = outcome.messages
    out = Path(config.out) if config.out else Path(Lake(config.data_dir).reports, "publish")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{int(time.time() * 1e6) % 1_000_000:06d}"
    outcome.record_path = write_json(out / f"publish-{stamp}-{record['status']}.json", record)
    outcome.record = record
    return outcome
