"""`ple publish`: the quality gate, checked exports, the registry, concurrent publishers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_registry.bundle import verify_bundle
from publishing.export import ExportMismatch, PositionalModel, export_model
from model_registry.registry import download_version, list_versions, registry_settings, version_by_alias
from ple_model import model_inputs
from evaluation_tables import DATES, ROWS_PER_DAY, day_frame
from jobs.evaluate import main as evaluate_main
from jobs.publish import main as publish_main
from ple_model.model_file import load_model, save_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def _publish(model_dir, data_root, lake_root, *extra):
    return publish_main(["--model", str(model_dir), "--date", DATES[1], "--data-dir", str(data_root),
                         "--table", str(lake_root / "lake" / "examples"), "--onnx-exporter", "torchscript", *extra])


NO_FLOORS = ["--set", "floors={chance_auc: false, prior_logloss_tolerance: null, single_task_tolerance: null, "
                     "calibration_band: null}"]


def _constant_model(trained: Path, out: Path) -> Path:
    """The model of `trained` with every weight zero: the same prediction for every row."""
    loaded = load_model(trained / "model.pt")
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.zero_()
    save_model(out / "model.pt", loaded.model, loaded.spec, loaded.model_name, loaded.hyperparameters,
               metadata=loaded.metadata)
    return out


def test_gate_blocks_a_worse_model_and_passes_a_better_one(lake_root, trained_models, tmp_path, capsys):
    settings = registry_settings(str(tmp_path))
    # Nothing published yet: the floors still apply. A model no better than chance is refused, the
    # reason named per binary task and recorded; nothing registered.
    assert _publish(_constant_model(trained_models["ple_bad"], tmp_path / "constant"), tmp_path, lake_root) == 3
    err = capsys.readouterr().err
    for task in ("play", "share"):
        assert f"{task}.auc: AUC 0.5000 with interval [" in err and "contains 0.5: no better than chance" in err
    assert list_versions(settings) == []
    record = json.loads(next((tmp_path / "reports" / "publish").rglob("*.json")).read_text())
    assert {(f["task"], f["reason"]) for f in record["gate"]["failures"]} >= {
        ("play", "auc_contains_chance"), ("share", "auc_contains_chance")}
    # Without the floors (the gate as it was), an untrained model with finite metrics is published.
    assert _publish(trained_models["ple_bad"], tmp_path, lake_root, *NO_FLOORS) == 0
    assert str(version_by_alias(settings).version) == "1"
    # Better on every task: passes, the alias moves.
    assert _publish(trained_models["ple"], tmp_path, lake_root) == 0
    assert str(version_by_alias(settings).version) == "2"
    capsys.readouterr()
    # Worse: blocked, with the task and the margin; nothing registered, alias unchanged.
    assert _publish(trained_models["ple_bad"], tmp_path, lake_root) == 3  # 3 = refused by the gate
    err = capsys.readouterr().err
    assert "quality gate FAILED" in err and "play.auc is worse than production by 0." in err
    assert "tolerance 0.002" in err
    assert sorted(str(v.version) for v in list_versions(settings)) == ["1", "2"]
    assert str(version_by_alias(settings).version) == "2"
    # The same verdict from the gate alone, on the snapshot a `ple evaluate` run read (the Airflow DAG's path).
    report = tmp_path / "evaluated"
    assert evaluate_main(["--model", str(trained_models["ple_bad"]), "--date", DATES[1], "--data-dir", str(tmp_path),
                          "--table", str(lake_root / "lake" / "examples"), "--out", str(report)]) == 0
    evaluated = json.loads((report / "metrics.json").read_text())
    assert evaluated["production"]["model_id"] == "ple_video/v2"
    assert evaluated["production_comparison"]["play"]["auc"]["improvement"] < 0
    assert publish_main(["--model", str(trained_models["ple_bad"]), "--metrics", str(report / "metrics.json"),
                         "--data-dir", str(tmp_path), "--check-only"]) == 3
    assert len(list_versions(settings)) == 2
    # A tolerance wide enough lets it through (per-task + global settings are honoured).
    loose = ["--set", "tolerance.default={auc: 1.0, logloss: 1.0, mse: 1.0}", *NO_FLOORS]
    assert _publish(trained_models["ple_bad"], tmp_path, lake_root, *loose) == 0
    assert str(version_by_alias(settings).version) == "3"

    # The published bundle is complete and carries lineage.
    bundle = download_version(settings, settings.model_name, "2", tmp_path / "download")
    assert verify_bundle(bundle) == []
    lineage = json.loads((bundle / "lineage.json").read_text())
    assert lineage["evaluation_snapshot"]["version"] == 1 and lineage["code_version"]["source"]
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["gate"]["passed"] and metrics["production"]["version"] == "1"
    assert load_model(bundle / "model.pt").model_name == "ple"


def _same(value, reference) -> bool:
    """Equal as JSON (so NaN equals NaN and tuples equal lists)."""
    return json.dumps(value, sort_keys=True) == json.dumps(reference, sort_keys=True)


@pytest.fixture()
def reads(monkeypatch):
    """The rows publish reads, batch by batch: [(rows asked, rows given)] of the streaming reader; reading a
    whole day at once (evaluation.snapshot_rows' pyarrow reader) fails the test."""
    import evaluation.snapshot_rows
    import ple_runtime.arrow_storage

    stream = ple_runtime.arrow_storage.parquet_batches
    seen: list[tuple[int, int]] = []

    def counted(locations, columns, rows):
        for frame in stream(locations, columns, rows):
            seen.append((rows, len(frame)))
            yield frame

    def whole_day(*args, **kwargs):
        raise AssertionError("publish read a whole day at once")

    monkeypatch.setattr(ple_runtime.arrow_storage, "parquet_batches", counted)
    monkeypatch.setattr(evaluation.snapshot_rows, "_read_with_arrow", whole_day)
    return seen


def test_gate_streams_the_day_and_gives_ple_evaluates_figures(lake_root, trained_models, tmp_path, reads):
    """Publish scores the candidate and the published model in one pass of batches (evaluation's streaming
    core), keeps only labels, sample spaces and the two models' predictions, exports from one batch, and its
    gate figures are `ple evaluate`'s on the same rows."""
    # Batches of 128 rows (4 a day); 100 resamples: the same in both jobs, so the intervals must agree exactly.
    batches = ["--set", "batch_size=64", "--set", "rows_per_batch=100", "--set", "uncertainty.resamples=100"]
    assert _publish(trained_models["ple_bad"], tmp_path, lake_root, *NO_FLOORS, *batches,
                    "--out", str(tmp_path / "first")) == 0
    (first,) = [json.loads(p.read_text()) for p in (tmp_path / "first").glob("publish-*.json")]
    # The day in batches of 128 rows, plus the export's one batch of 256 (its example and check rows).
    assert sorted(reads) == sorted([(128, 128)] * 3 + [(128, ROWS_PER_DAY - 384), (256, 256)])
    assert first["export"]["onnx"]["check_rows"] == 256 == first["scoring"]["export_rows"]
    # Kept per row: 3 tasks x (float32 label + bool sample space) + 3 float32 predictions (the candidate).
    assert first["scoring"]["compact_bytes_per_row"] == 3 * (4 + 1) + 3 * 4
    reads.clear()

    report = tmp_path / "evaluated"
    assert evaluate_main(["--model", str(trained_models["ple"]), "--date", DATES[1], "--data-dir", str(tmp_path),
                          "--table", str(lake_root / "lake" / "examples"), "--out", str(report), *batches]) == 0
    evaluated = json.loads((report / "metrics.json").read_text())
    reads.clear()
    assert publish_main(["--model", str(trained_models["ple"]), "--metrics", str(report / "metrics.json"),
                         "--data-dir", str(tmp_path), "--check-only", "--out", str(tmp_path / "gate"),
                         *batches]) == 0
    (gate,) = [json.loads(p.read_text()) for p in (tmp_path / "gate").glob("publish-*.json")]
    assert max(given for _, given in reads) == 128 and sum(given for _, given in reads) == ROWS_PER_DAY  # one pass
    # Both models' predictions now: + 3 float32 a row; no user ids (the gate has no per-user figure).
    assert gate["scoring"]["compact_bytes_per_row"] == 3 * (4 + 1) + 2 * 3 * 4
    assert gate["scoring"]["compact_bytes"] == ROWS_PER_DAY * gate["scoring"]["compact_bytes_per_row"]
    assert gate["production"]["version"] == "1" == evaluated["production"]["model_id"].split("/v")[-1]
    for mine, theirs in ((gate["candidate_metrics"], evaluated["model"]["tasks"]),
                         (gate["production_metrics"], evaluated["production"]["tasks"])):
        assert set(mine) == set(theirs) == {"play", "watch_ratio", "share"}
        for task, figures in mine.items():
            assert {"auc", "logloss", "mse"} & set(figures) and figures["count"] == theirs[task]["count"]
            assert all(_same(value, theirs[task][key]) for key, value in figures.items()), task
    evidence = gate["gate_evidence"]
    for task in ("play", "share"):
        assert _same(evidence["auc_intervals"][task], evaluated["model"]["tasks"][task]["intervals"]["auc"])
    compared = evaluated["production_comparison"]
    for task, metrics in evidence["production"].items():
        for metric, change in metrics.items():
            assert change["low"] is not None and _same(change, {k: compared[task][metric][k] for k in change})


def _platt(examples_problem, loaded, date_index):
    """Platt calibration of the model fitted on one day of the problem (a monotone map on every task)."""
    from ple_model.calibration import fit_calibration
    from ple_model.prediction import predict

    _, columns = examples_problem
    features, labels, masks = model_inputs(day_frame(columns, date_index, DATES[date_index]), loaded.spec)
    predictions, _ = predict(loaded.model, loaded.spec, features)
    return features, fit_calibration(loaded.spec, predictions, labels, masks, method="platt")


def _exported_outputs(export_dir: Path, spec, rows: dict[str, np.ndarray]) -> tuple[list, list]:
    """(ONNX Runtime, TorchScript) outputs of an export folder on the given rows, in spec task order."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == spec.feature_names
    onnx_out = session.run(None, {name: rows[name] for name in spec.feature_names})
    scripted = torch.jit.load(str(export_dir / "model.torchscript.pt"))
    with torch.no_grad():
        script_out = [o.numpy() for o in scripted(*[torch.from_numpy(rows[n]) for n in spec.feature_names])]
    return onnx_out, script_out


def test_default_exporter_with_platt_calibration_matches_pytorch(examples_problem, trained_models, tmp_path):
    """The default ONNX exporter (torch.export based) really runs, no fallback, and with a Platt calibration both
    exports give the eager model's calibrated outputs on rows and a batch size the export's own check did not use."""
    loaded = load_model(trained_models["ple"])
    features, platt = _platt(examples_problem, loaded, 0)
    assert {c.kind for c in platt.calibrators.values()} == {"platt", "linear"}  # logistic (binary), linear (value)
    info = export_model(loaded.model, loaded.spec, tmp_path, features, calibration=platt)
    assert info["onnx"]["exporter"] == "dynamo" and info["onnx"]["exporter_errors"] == {}, info["onnx"]
    assert info["signature"]["calibration"] == "platt"
    assert max(info["onnx"]["max_abs_difference"].values()) <= 1e-5
    assert max(info["torchscript"]["max_abs_difference"].values()) <= 1e-5

    # Independently: 37 rows of another day through both exports vs the eager model, sigmoid and calibration.
    _, columns = examples_problem
    other_day, _, _ = model_inputs(day_frame(columns, 1, DATES[1]), loaded.spec)
    rows = {name: values[:37] for name, values in other_day.items()}
    with torch.no_grad():
        eager = loaded.model({name: torch.from_numpy(values) for name, values in rows.items()})
    raw = {"play": torch.sigmoid(eager["play"]).numpy(), "watch_ratio": eager["watch_ratio"].numpy(),
           "share": torch.sigmoid(eager["share"]).numpy()}
    expected = platt.apply_numpy(raw)
    assert np.abs(expected["play"] - raw["play"]).max() > 1e-3        # the calibration does change the outputs
    onnx_out, script_out = _exported_outputs(tmp_path, loaded.spec, rows)
    for index, task in enumerate(loaded.spec.task_names):
        np.testing.assert_allclose(onnx_out[index], expected[task], atol=1e-5)
        np.testing.assert_allclose(script_out[index], expected[task], atol=1e-5)


def test_calibration_survives_model_file_export_and_load(examples_problem, trained_models, tmp_path):
    """A calibration fitted on one day is stored in model.pt, loads back with the model, and the TorchScript and
    ONNX exports (the default exporter) apply it (serving needs nothing else)."""
    from model_registry.model_refs import load_model_ref
    from ple_model.prediction import predict
    from ple_model.calibration import attach_calibration, fit_calibration

    loaded = load_model(trained_models["ple"])
    _, columns = examples_problem
    features, labels, masks = model_inputs(day_frame(columns, 0, DATES[0]), loaded.spec)
    predictions, _ = predict(loaded.model, loaded.spec, features)
    calibration = fit_calibration(loaded.spec, predictions, labels, masks, method="isotonic")
    model_file = attach_calibration(str(trained_models["ple"] / "model.pt"), calibration, str(tmp_path / "model.pt"))

    resolved = load_model_ref(model_file, registry_settings(str(tmp_path)))
    assert resolved.calibration is not None and resolved.calibration_source == {"source": "model file",
                                                                                 "method": "isotonic"}
    other_day, _, _ = model_inputs(day_frame(columns, 1, DATES[1]), loaded.spec)
    raw, _ = predict(resolved.loaded.model, resolved.spec, other_day)
    expected = calibration.apply_numpy(raw)
    assert resolved.calibration.apply_numpy(raw)["play"] == pytest.approx(expected["play"])
    assert np.abs(expected["play"] - raw["play"]).max() > 1e-3        # the calibration does change the outputs

    info = export_model(resolved.loaded.model, resolved.spec, tmp_path / "export", other_day,
                        calibration=resolved.calibration)
    assert info["onnx"]["exporter"] == "dynamo" and info["onnx"]["exporter_errors"] == {}, info["onnx"]
    assert info["signature"]["calibration"] == "isotonic"
    assert info["signature"]["outputs"][0]["meaning"] == "calibrated probability"
    onnx_out, script_out = _exported_outputs(tmp_path / "export", resolved.spec, other_day)
    for index, task in enumerate(resolved.spec.task_names):
        np.testing.assert_allclose(onnx_out[index], expected[task], atol=1e-5)
        np.testing.assert_allclose(script_out[index], expected[task], atol=1e-5)


def test_export_mismatch_is_an_error(trained_models, tmp_path, monkeypatch):
    loaded = load_model(trained_models["ple"])
    original = PositionalModel.raw  # the eager outputs the exports are checked against

    def drifting(self, *features):  # eager outputs drift after export: the check must catch it
        outputs = original(self, *features)
        return {task: o + (1e-3 if torch.jit.is_tracing() is False and not torch.onnx.is_in_onnx_export() else 0.0)
                for task, o in outputs.items()}

    monkeypatch.setattr(PositionalModel, "raw", drifting)
    with pytest.raises(ExportMismatch, match="differ from PyTorch's by more than 1e-05"):
        export_model(loaded.model, loaded.spec, tmp_path, None, exporter="torchscript")


def _lease_tickets(settings) -> list[int]:
    """Tickets now in the publish lease queue (publishers holding or waiting for the lease). Any error of the
    look-up propagates: a check of "no tickets left" must not pass because the registry could not be read."""
    from model_registry.registry import client

    assert settings.exists(), f"no registry at {settings.tracking_uri}"
    mlflow_client = client(settings)
    assert mlflow_client.get_registered_model(settings.lease_name).name == settings.lease_name  # the queue exists
    return sorted(int(v.version) for v in mlflow_client.search_model_versions(f"name='{settings.lease_name}'"))


def _race_two_publishers(models, lake_root, data_root: Path, env, tracking_uri: str | None = None):
    """Publisher A takes the lease and holds it until B is provably queued behind it, then lets go.

    A waits (`--debug-hold-lock-until`) for a file the test creates only once B's ticket is in the registry, so
    the two always contend: B must wait for A, whatever the machine's speed.
    """
    import time

    settings = registry_settings(str(data_root), tracking_uri)
    registry_args = ["--tracking-uri", tracking_uri] if tracking_uri else []
    release = data_root / "release-lease"
    records = data_root / "records"
    waiting: list[str] = []  # look-up errors while the registry is being created (shown if the wait fails)

    def command(name, *extra):
        return [sys.executable, "-m", "jobs.cli", "publish", "--model", str(models[name]), "--date", DATES[1],
                "--data-dir", str(data_root), "--table", str(lake_root / "lake" / "examples"),
                "--onnx-exporter", "torchscript", "--out", str(records), *registry_args, *extra]

    def queued() -> int:
        try:
            return len(_lease_tickets(settings))
        except Exception as error:  # noqa: BLE001 (the first publisher is still creating the registry or the queue)
            waiting.append(f"{type(error).__name__}: {error}"[:300])
            return 0

    def wait_for_tickets(count, processes):
        deadline = time.time() + 600
        while queued() < count:
            exited = [p for p in processes if p.poll() is not None]
            assert not exited and time.time() < deadline, ([p.communicate()[0][-3000:] for p in processes],
                                                            waiting[-1:])
            time.sleep(0.5)

    first = subprocess.Popen(command("ple", "--debug-hold-lock-until", str(release)), cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_tickets(1, [first])
    second = subprocess.Popen(command("ple_other"), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    wait_for_tickets(2, [first, second])
    time.sleep(1.0)
    release.touch()
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    codes = [p.returncode for p in (first, second)]
    assert set(codes) <= {0, 3}, outputs  # published, or refused by the gate against the other one
    found = sorted((json.loads(p.read_text()) for p in records.glob("publish-*.json")),
                   key=lambda r: r["lock"]["acquired_at"])
    assert len(found) == 2, outputs
    return settings, found, outputs


def _assert_serialised_and_consistent(settings, records, tmp_path):
    first, second = records
    # The lease serialised the gate+register+alias sections...
    assert first["lock"]["released_at"] <= second["lock"]["acquired_at"]
    # ...and the second publisher provably waited for the first (queued behind its ticket while it held the lease).
    assert first["lock"]["ticket"] in second["lock"]["waited_for"] and second["lock"]["waited_s"] >= 1.0
    assert first["lock"]["expired"] == [] and second["lock"]["expired"] == []
    # ...so the second compared against what the first had just published.
    assert first["status"] == "published" and first["production"] is None
    assert second["production"]["version"] == first["version"]
    published = [r for r in records if r["status"] == "published"]
    assert len(list_versions(settings)) == len(published)
    production = version_by_alias(settings)
    assert str(production.version) == published[-1]["version"]
    bundle = download_version(settings, settings.model_name, production.version, tmp_path / "check")
    assert verify_bundle(bundle) == []
    assert _lease_tickets(settings) == []  # both released their tickets


@pytest.mark.slow
def test_concurrent_publishes_leave_a_consistent_registry(lake_root, trained_models, tmp_path, subprocess_env):
    env = dict(subprocess_env, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    settings, records, _ = _race_two_publishers(trained_models, lake_root, tmp_path, env)
    _assert_serialised_and_consistent(settings, records, tmp_path)


@pytest.mark.slow
def test_concurrent_publishes_against_a_tracking_server(mlflow_server, lake_root, trained_models, tmp_path,
                                                        subprocess_env):
    """Publishers that share nothing but an MLflow server (no common filesystem for a lock, artifacts uploaded
    through the server) still serialise: the lease lives in the server's registry."""
    env = dict(subprocess_env, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    settings, records, _ = _race_two_publishers(trained_models, lake_root, tmp_path, env, mlflow_server)
    assert settings.tracking_uri == mlflow_server and settings.artifact_location is None
    _assert_serialised_and_consistent(settings, records, tmp_path)
    assert all(r["registry"]["tracking_uri"] == mlflow_server for r in records)


def test_a_dead_publishers_lease_expires(tmp_path):
    """A ticket whose holder stopped beating (a crashed publisher) blocks the next one for the TTL, not forever."""
    import time

    from model_registry.registry import client
    from publishing.lease import publish_lease

    settings = registry_settings(str(tmp_path))
    with publish_lease(settings, ttl_s=60):
        pass  # creates the queue
    mlflow_client = client(settings)
    dead = mlflow_client.create_model_version(settings.lease_name, source="ple-lease:/queue/dead-publisher",
                                              tags={"ple.lease.holder": "host:1:dead", "ple.lease.beat": "7"},
                                              await_creation_for=0)
    assert _lease_tickets(settings) == [int(dead.version)]  # the look-up sees a ticket that is there
    started = time.monotonic()
    with publish_lease(settings, timeout_s=60, ttl_s=2.0, poll_s=0.2) as lease:
        waited = time.monotonic() - started
        assert lease.record["waited_for"] == [int(dead.version)]
        assert lease.record["expired"] == [{"ticket": int(dead.version), "holder": "host:1:dead"}]
        lease.check()
    assert 2.0 <= waited < 30
    assert _lease_tickets(settings) == []
    # A live holder is never expired: its heartbeat moves faster than the TTL.
    with publish_lease(settings, ttl_s=2.0) as holder:
        with pytest.raises(TimeoutError, match="waited 6 s behind tickets"):
            with publish_lease(settings, timeout_s=6, ttl_s=2.0, poll_s=0.2):
                pass
        holder.check()


def test_alias_failure_after_registering_leaves_a_complete_unaliased_version(lake_root, trained_models, tmp_path,
                                                                              monkeypatch, capsys):
    import publishing.publish

    settings = registry_settings(str(tmp_path))
    # v1 @production: the deliberately weak model, past the floors (this test is about the registry)
    assert _publish(trained_models["ple_bad"], tmp_path, lake_root, *NO_FLOORS) == 0

    def broken_alias_move(*args, **kwargs):
        raise ConnectionError("registry went away")

    monkeypatch.setattr(publishing.publish, "move_alias", broken_alias_move)
    capsys.readouterr()
    assert _publish(trained_models["ple"], tmp_path, lake_root, "--out", str(tmp_path / "records")) == 1
    err = capsys.readouterr().err
    assert "registered ple_video v2 but could not move @production" in err and "registry went away" in err
    assert "complete but unaliased" in err and "nothing published" not in err
    (record_path,) = (tmp_path / "records").glob("publish-*-alias_failed.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "alias_failed" and record["version"] == "2"
    # The registry: v2 is complete, nothing points at it; production is still v1; the lease was released.
    assert str(version_by_alias(settings).version) == "1"
    assert sorted(str(v.version) for v in list_versions(settings)) == ["1", "2"]
    assert verify_bundle(download_version(settings, settings.model_name, "2", tmp_path / "v2")) == []
    assert _lease_tickets(settings) == []
    # A re-run completes that publish: the alias moves to v2, no duplicate version is registered.
    monkeypatch.undo()
    assert _publish(trained_models["ple"], tmp_path, lake_root) == 0
    assert str(version_by_alias(settings).version) == "2"
    assert sorted(str(v.version) for v in list_versions(settings)) == ["1", "2"]


def test_metrics_of_another_model_or_date_are_refused(lake_root, trained_models, tmp_path, capsys):
    report = tmp_path / "evaluated"
    assert evaluate_main(["--model", str(trained_models["ple"]), "--date", DATES[1], "--data-dir", str(tmp_path),
                          "--table", str(lake_root / "lake" / "examples"), "--no-with-production",
                          "--set", "uncertainty.resamples=0", "--out", str(report)]) == 0
    capsys.readouterr()
    metrics = str(report / "metrics.json")
    assert publish_main(["--model", str(trained_models["ple_other"]), "--metrics", metrics, "--data-dir",
                         str(tmp_path), "--check-only"]) == 1
    err = capsys.readouterr().err
    assert "evaluated another model" in err and "nothing published" in err
    assert publish_main(["--model", str(trained_models["ple"]), "--metrics", metrics, "--date", DATES[0],
                         "--data-dir", str(tmp_path), "--check-only"]) == 1
    assert f"--date {DATES[0]} differs from the date {DATES[1]}" in capsys.readouterr().err
    assert not (tmp_path / "registry" / "mlflow.db").exists()  # refused before touching the registry
