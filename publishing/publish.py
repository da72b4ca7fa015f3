"""What `ple publish` does: evaluate, export, gate, register, move the alias.

Order, and why:
1. Pin the evaluation snapshot (table, date, version) and score the candidate
   (with a post-hoc calibration: the one its model.pt carries, or one fitted on
   `calibrate_on`; the bundle's model.pt and exports then carry and apply it).
2. Build the whole bundle in a temp folder (exports checked against PyTorch).
   Slow, so it happens OUTSIDE the lease.
3. Under the publish lease (publishing.lease.publish_lease: held through
   the registry, so publishers on several hosts serialise): read the CURRENT
   production version, score it on the same pinned rows, run the gate, and
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.config import EvaluationFailed
from evaluation.scoring import headline, score_model
from evaluation.snapshot_rows import read_date_snapshot
from model_registry.bundle import export_vocabulary, model_vocabulary_version, write_manifest
from model_registry.model_refs import ResolvedModel, load_model_ref, load_or_fail
from model_registry.registry import RegistrySettings, move_alias, register_bundle, registry_settings, version_by_alias
from ple_model import model_inputs
from ple_model.calibration import attach_calibration
from ple_model.model_inputs import source_columns
from ple_runtime.config import config_as_dict
from ple_runtime.lake import Lake
from ple_runtime.lineage import code_version, run_context, write_json
from ple_runtime.snapshot import resolve_date_snapshot

from .config import PublishConfig
from .export import export_model
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


def build_bundle(bundle: Path, candidate: ResolvedModel, frame, config, snapshot, spark=None) -> dict[str, Any]:
    """Everything but metrics.json and manifest.json (written under the lease, after the gate)."""
    bundle.mkdir(parents=True, exist_ok=True)
    if candidate.calibration is not None:   # the bundle's model.pt carries the calibration it is served with
        attach_calibration(str(candidate.model_file), candidate.calibration, str(bundle / "model.pt"))
    else:
        shutil.copy2(candidate.model_file, bundle / "model.pt")
    features = model_inputs(frame, candidate.spec).features
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


def gate_evidence(config, spec, frame, candidate_predictions: dict, production_predictions: dict | None
                  ) -> GateEvidence:
    """The gate's statistical evidence on its rows: the candidate's AUC intervals (DeLong), the
    logloss of the constant base-rate predictor per binary task, the paired intervals of the
    improvement over production (evaluation/comparison.py, same rows), and, from the `ple
    evaluate` record (--metrics) when it has one, the paired interval against the single-task
    baseline."""
    from evaluation.comparison import REPORTED_METRICS, PairedScores

    _, labels, masks = model_inputs(frame, spec)
    paired = PairedScores(spec, labels, masks, uncertainty=config.uncertainty)
    paired.add("candidate", candidate_predictions)
    if production_predictions is not None:
        paired.add("production", production_predictions)
    paired.compute()
    evidence = GateEvidence()
    for task in spec.tasks:
        intervals = paired.task_figures("candidate").get(task.name, {}).get("intervals", {})
        if task.type == "binary":
            if intervals.get("auc"):
                evidence.auc_intervals[task.name] = intervals["auc"]
            in_space = np.asarray(masks[task.name]).reshape(-1) > 0
            evidence.prior_logloss[task.name] = base_rate_logloss(np.asarray(labels[task.name])[in_space])
        if production_predictions is not None and task.name in production_predictions:
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


def _production_scores(config, settings, frame, snapshot, workdir: Path, device: str, spark):
    """(production version, its info, its scores on the same rows, its ResolvedModel, its predictions
    when they are on the very rows of `frame`) or Nones."""
    production_version = version_by_alias(settings, config.alias)
    if production_version is None:
        return None, None, None, None, None
    production = load_model_ref(f"models:/{settings.model_name}/{production_version.version}", settings,
                                workdir / "production", device)
    info = {"version": str(production_version.version), "model_id": production.model_id, "sha256": production.sha256}
    missing = [c for c in source_columns(production.spec) if c not in frame.columns]
    production_frame = read_date_snapshot(snapshot, list(frame.columns) + missing, config.reader, spark) \
        if missing else frame
    scores = score_model(production.loaded.model, production.spec, production_frame, config.batch_size, device,
                         config.calibration_bins, keep_predictions=True, calibration=production.calibration)
    paired = scores.predictions if production_frame is frame else None  # re-read rows: no pairing
    return production_version, info, scores.tasks, production, paired


def check_only(config, settings, candidate, candidate_scores, frame, snapshot, workdir: Path, spark) -> PublishOutcome:
    """The gate alone (read-only: no lease, no export, no registry writes)."""
    _, info, scores, _, paired = _production_scores(config, settings, frame, snapshot, workdir,
                                                    config.resolved_device, spark)
    evidence = gate_evidence(config, candidate.spec, frame, candidate_scores.predictions, paired)
    gate = check_gate(candidate.spec, candidate_scores.tasks, scores, config.tolerance, info, evidence, config.floors)
    record = {"format": "ple-publish/1", "candidate": candidate.identity(), "snapshot": snapshot.summary(),
              "candidate_metrics": candidate_scores.tasks, "production": info, "production_metrics": scores,
              "gate": gate.to_dict(), "gate_evidence": asdict(evidence),
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
    device = config.resolved_device
    candidate = load_or_fail(config.model, settings, workdir / "candidate", device)
    snapshot = resolve_publish_snapshot(config, candidate)
    if config.calibrate_on is not None:
        from evaluation.evaluate import ScoringOptions, calibrate_models

        calibrate_models([candidate], config.table_path, config.calibrate_on, ScoringOptions.from_config(config),
                         config.calibration_method, config.partition_column, spark)
    try:
        frame = read_date_snapshot(snapshot, source_columns(candidate.spec), config.reader, spark)
    except KeyError as error:
        raise EvaluationFailed(str(error).strip("'\"")) from None
    candidate_scores = score_model(candidate.loaded.model, candidate.spec, frame, config.batch_size, device,
                                   config.calibration_bins, keep_predictions=True, calibration=candidate.calibration)
    if config.check_only:
        return check_only(config, settings, candidate, candidate_scores, frame, snapshot, workdir, spark)
    bundle = workdir / "bundle"
    built = build_bundle(bundle, candidate, frame, config, snapshot, spark)

    record: dict[str, Any] = {"format": "ple-publish/1", "candidate": candidate.identity(),
                              "snapshot": snapshot.summary(), "candidate_metrics": candidate_scores.tasks,
                              "export": built["export"], "registry": {"tracking_uri": settings.tracking_uri,
                                                                      "model": settings.model_name,
                                                                      "alias": config.alias},
                              "started_at": run_context()["started_at"]}
    with publish_lease(settings, config.lock_timeout_s, config.lease_ttl_s) as lease:
        record["lock"] = lease.record  # the lease fills in released_at when it deletes its ticket
        outcome = _publish_holding_lease(config, settings, lease, candidate, candidate_scores, frame, snapshot,
                                         bundle, record, workdir, spark)
    return _finish(config, record, outcome)


class PublishFailed(EvaluationFailed):  # a StageError: exit 1
    """A registry write failed after the gate passed; the record says what state the registry was left in."""


def _publish_holding_lease(config, settings, lease, candidate, candidate_scores, frame, snapshot, bundle: Path,
                           record: dict[str, Any], workdir: Path, spark) -> PublishOutcome:
    device = config.resolved_device
    production_version, production_info, production_scores, production, paired = _production_scores(
        config, settings, frame, snapshot, workdir, device, spark)
    if production is not None and production.sha256 == candidate.sha256:
        record["status"] = "unchanged"
        return PublishOutcome("unchanged", str(production_version.version),
                              messages=[f"the candidate is already {settings.model_name} "
                                        f"v{production_version.version} (@{config.alias}); nothing published"])
    evidence = gate_evidence(config, candidate.spec, frame, candidate_scores.predictions, paired)
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
