"""After training: post-hoc calibration of the selected model, fitted on the validation rows.

`model.pt` (the epoch(s) model selection kept) predicts every row of the run's
validation snapshot, read and scored in batches (`validation_predictions`);
`ple_model.calibration.fit_calibration` fits one monotone map per task
(isotonic by default, or Platt; `calibration: none` skips it) and the model
file carries it (its "calibration" entry): evaluation, publishing and
the TorchScript/ONNX exports apply it. Runs once, in the launching process,
after the workers are done, whatever the launcher. Why post-hoc rather than a
better-calibrated loss: docs/MODEL.md (calibration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ple_model import model_inputs
from ple_model.calibration import attach_calibration, fit_calibration
from ple_model.model_file import load_model
from ple_model.model_inputs import source_columns
from ple_model.prediction import aligned_batch_rows, predict
from ple_runtime import arrow_storage
from ple_runtime.lineage import write_json

from .data import shard_layout
from .plan import TrainingPlan
from .validation_rows import ValidationRows


def _level(predictions: dict[str, np.ndarray], labels, masks) -> dict[str, dict[str, float]]:
    """Mean prediction and mean label per task inside its sample space."""
    figures = {}
    for task, values in predictions.items():
        in_space = np.asarray(masks[task]) > 0
        if in_space.any():
            figures[task] = {"mean_prediction": float(np.mean(values[in_space])),
                             "observed": float(np.mean(np.asarray(labels[task])[in_space]))}
    return figures


def validation_predictions(loaded, paths: list[str], rows: int, batch_size: int,
                           rows_per_batch: int = 65536) -> ValidationRows:
    """The model's predictions, labels and sample-space masks for every row of `paths` (`rows` of them, from
    the footers), read and scored `rows_per_batch` rows at a time (a multiple of `batch_size`: the forward
    passes of one whole read): what stays is what validation keeps (training/validation_rows.py, 27 bytes a
    row for the video spec), not the day's columns (the whole day read into pandas peaked at 2.89 GB for 1M
    rows)."""
    kept = ValidationRows(loaded.spec, rows)
    for frame in arrow_storage.parquet_batches(paths, source_columns(loaded.spec),
                                                aligned_batch_rows(rows_per_batch, batch_size)):
        inputs = model_inputs(frame, loaded.spec)
        predictions, _ = predict(loaded.model, loaded.spec, inputs.features, batch_size)
        if not kept.fill(predictions, inputs.labels, inputs.masks):
            break
    if kept.filled != kept.rows:
        raise ValueError(f"the validation files gave other than the {rows} rows their footers say: {paths}")
    return kept


def calibrate_model(plan: TrainingPlan) -> dict[str, Any] | None:
    """Fit and attach the calibration (module doc); returns what the run record keeps."""
    method = plan.config.calibration
    model_file = Path(plan.config.out) / "model.pt"
    if method == "none" or not model_file.is_file():
        return None
    loaded = load_model(model_file)
    snapshot = plan.validation_snapshot
    kept = validation_predictions(loaded, snapshot.paths, shard_layout(snapshot.urls, 1).total_rows,
                                  plan.config.validation_batch_size)
    predictions, labels, masks = kept.columns()
    calibration = fit_calibration(loaded.spec, predictions, labels, masks, method=method)
    attach_calibration(str(model_file), calibration)
    calibrated = calibration.apply_numpy(predictions)
    return {"method": method, "fitted_on": snapshot.summary(), "rows": kept.rows,
            "fit": calibration.fit_report,
            "before": _level(predictions, labels, masks),
            "after": _level(calibrated, labels, masks)}


def record_calibration(plan: TrainingPlan, record: dict[str, Any] | None) -> None:
    """Add the calibration to <out>/run_record.json (the workers wrote the rest)."""
    import json

    path = Path(plan.config.out) / "run_record.json"
    if record is None or not path.is_file():
        return
    run_record = json.loads(path.read_text())
    run_record["calibration"] = record
    write_json(path, run_record)
