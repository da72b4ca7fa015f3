"""Evaluate, compare, publish, backfill and experiment with multi-task models (docs/EVALUATION.md).

    from ple_runtime.snapshot import resolve_date_snapshot   # which rows (Delta time travel; shared with training)
    from evaluation.snapshot_rows import read_date_snapshot   # those rows as pandas (pyarrow or Spark)
    from evaluation.model_refs import load_model_ref      # run folder / model.pt / models:/name/3 / @production
    from evaluation.scoring import score_model            # per-task metrics, calibration curves, gate usage
    from evaluation.comparison import PairedScores        # intervals and paired differences on the same rows
    from evaluation.evaluate import run_evaluation        # candidate vs production vs single-task (MTL gain)
    from evaluation.report import evaluation_report       # self-contained HTML (base64 PNG plots)
    from evaluation.gate import check_gate, Tolerances    # the quality gate
    from evaluation.export import export_model            # TorchScript + ONNX, checked against PyTorch
    from evaluation.publish import run_publish            # gate + bundle + MLflow registry + alias, under a lease
    from evaluation.backfill import run_backfill          # metrics per date into a Delta table
    from evaluation.experiment import train_all, evaluate_all   # models x seeds, the seesaw table

Jobs: `ple evaluate`, `ple publish`, `ple backfill`, `ple experiment` (jobs/*.py).
"""
