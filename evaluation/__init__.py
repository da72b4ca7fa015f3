"""Evaluate, compare, publish and backfill multi-task models (docs/EVALUATION.md).

    from evaluation.snapshot import resolve_date_snapshot, read_date_snapshot   # which rows (Delta time travel)
    from evaluation.models import load_model_ref          # run folder / model.pt / models:/name/3 / @production
    from evaluation.scoring import score_model            # per-task metrics, calibration curves, gate usage
    from evaluation.evaluate import evaluate_on_snapshot  # candidate vs production vs single-task (MTL gain)
    from evaluation.report import evaluation_report       # self-contained HTML (base64 PNG plots)
    from evaluation.gate import check_gate, Tolerances    # the quality gate
    from evaluation.export import export_model            # TorchScript + ONNX, checked against PyTorch
    from evaluation.publish import run_publish            # gate + bundle + MLflow registry + alias
    from evaluation.backfill import run_backfill          # metrics per date into a Delta table

Jobs: `ple evaluate`, `ple publish`, `ple backfill` (jobs/*.py).
"""
