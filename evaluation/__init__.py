"""Evaluate, compare and backfill multi-task models on pinned date snapshots (docs/EVALUATION.md).

    from evaluation.config import EvaluateConfig, BackfillConfig   # the stages' typed settings
    from evaluation.evaluate import run                   # `ple evaluate`: candidate vs production vs single-task
    from evaluation.backfill import run                   # `ple backfill`: metrics per date into a Delta table
    from evaluation.evaluate import score_snapshot, paired_scores   # the scoring core (also `ple experiment`'s)
    from evaluation.snapshot_rows import read_date_snapshot   # a pinned date's rows as pandas (pyarrow or Spark)
    from evaluation.scoring import score_model            # per-task metrics, calibration curves, gate usage
    from evaluation.comparison import PairedScores        # intervals and paired differences on the same rows
    from evaluation.report import evaluation_report       # self-contained HTML (base64 PNG plots)

Which rows: ple_runtime/snapshot.py (shared with training). Which model: model_registry/.
Publishing (gate, export, registry writes): publishing/. Experiments: orchestration/experiment.py.
"""
