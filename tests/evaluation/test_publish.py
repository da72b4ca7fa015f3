"""`ple publish`: the quality gate, checked exports, the registry, concurrent publishers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.bundle import verify_bundle
from evaluation.export import ExportMismatch, PositionalModel, export_model
from evaluation.registry import download_version, list_versions, registry_settings, version_by_alias
from evaluation.scoring import model_inputs
from evaluation_tables import DATES, day_frame
from jobs.evaluate import main as evaluate_main
from jobs.publish import main as publish_main
from training.model_io import load_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def _publish(model_dir, data_root, lake_root, *extra):
    return publish_main(["--model", str(model_dir), "--date", DATES[1], "--data-dir", str(data_root),
                         "--table", str(lake_root / "lake" / "examples"), "--onnx-exporter", "torchscript", *extra])


def test_gate_blocks_a_worse_model_and_passes_a_better_one(lake_root, trained_models, tmp_path, capsys):
    settings = registry_settings(str(tmp_path))
    # Nothing published yet: the gate only asks for finite metrics.
    assert _publish(trained_models["ple_bad"], tmp_path, lake_root) == 0
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
    loose = ["--set", "tolerance.default={auc: 1.0, logloss: 1.0, mse: 1.0}"]
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


def test_onnx_and_torchscript_match_pytorch(examples_problem, trained_models, tmp_path):
    import onnxruntime as ort

    loaded = load_model(trained_models["ple"])
    _, columns = examples_problem
    features, _, _ = model_inputs(day_frame(columns, 0, DATES[0]), loaded.spec)
    info = export_model(loaded.model, loaded.spec, tmp_path, features)  # default exporter (torch.export based)
    assert info["onnx"]["exporter"] in ("dynamo", "torchscript")
    assert max(info["onnx"]["max_abs_difference"].values()) <= 1e-5
    assert max(info["torchscript"]["max_abs_difference"].values()) <= 1e-5

    # Independently: another batch size through ONNX Runtime vs the eager model's probabilities.
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == loaded.spec.feature_names
    rows = {name: values[:37] for name, values in features.items()}
    onnx_out = session.run(None, {name: rows[name].numpy() for name in loaded.spec.feature_names})
    with torch.no_grad():
        eager = loaded.model(rows)
    np.testing.assert_allclose(onnx_out[0], torch.sigmoid(eager["play"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(onnx_out[1], eager["watch_ratio"].numpy(), atol=1e-5)
    scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))
    with torch.no_grad():
        scripted_share = scripted(*[rows[n] for n in loaded.spec.feature_names])[2]
    np.testing.assert_allclose(scripted_share.numpy(), torch.sigmoid(eager["share"]).numpy(), atol=1e-5)


def test_export_mismatch_is_an_error(trained_models, tmp_path, monkeypatch):
    loaded = load_model(trained_models["ple"])
    original = PositionalModel.forward

    def drifting(self, *features):  # eager outputs drift after export: the check must catch it
        outputs = original(self, *features)
        return tuple(o + (1e-3 if torch.jit.is_tracing() is False and not torch.onnx.is_in_onnx_export() else 0.0)
                     for o in outputs)

    monkeypatch.setattr(PositionalModel, "forward", drifting)
    with pytest.raises(ExportMismatch, match="differ from PyTorch's by more than 1e-05"):
        export_model(loaded.model, loaded.spec, tmp_path, None, exporter="torchscript")


def test_concurrent_publishes_leave_a_consistent_registry(lake_root, trained_models, tmp_path, subprocess_env):
    env = dict(subprocess_env, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    commands = [[sys.executable, "-m", "jobs.cli", "publish", "--model", str(trained_models[name]),
                 "--date", DATES[1], "--data-dir", str(tmp_path), "--table", str(lake_root / "lake" / "examples"),
                 "--onnx-exporter", "torchscript", "--debug-hold-lock-s", "3",
                 "--out", str(tmp_path / "records")] for name in ("ple", "ple_other")]
    processes = [subprocess.Popen(c, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for c in commands]
    outputs = [p.communicate(timeout=400)[0] for p in processes]
    codes = [p.returncode for p in processes]
    assert set(codes) <= {0, 3}, outputs  # published, or refused by the gate against the other one
    records = sorted((json.loads(p.read_text()) for p in (tmp_path / "records").glob("publish-*.json")),
                     key=lambda r: r["lock"]["acquired_at"])
    assert len(records) == 2, outputs
    first, second = records
    # The lock serialised the gate+register+alias sections...
    assert first["lock"]["released_at"] <= second["lock"]["acquired_at"]
    # ...so the second compared against what the first had just published.
    assert first["status"] == "published" and first["production"] is None
    assert second["production"]["version"] == first["version"]
    settings = registry_settings(str(tmp_path))
    published = [r for r in records if r["status"] == "published"]
    assert len(list_versions(settings)) == len(published)
    production = version_by_alias(settings)
    assert str(production.version) == published[-1]["version"]
    bundle = download_version(settings, settings.model_name, production.version, tmp_path / "check")
    assert verify_bundle(bundle) == []
