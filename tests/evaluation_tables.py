"""Helpers for the evaluation tests: a tiny examples Delta table (Spark) and tiny trained models.

The data follow ple_model.synthetic.easy_multitask_problem (3 tasks: play,
watch_ratio masked by play, share). One sample is drawn and cut into days, so
every day is the same problem. Models are trained for a few hundred steps on
separate rows and saved with ple_model.model_file.save_model (the format
`ple train` writes), so evaluate/publish load them as they load real runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ple_model import build_model, losses, synthetic
from ple_model.model_file import save_model

DATES = ("2026-01-05", "2026-01-06", "2026-01-07")
ROWS_PER_DAY = 500
TRAIN_ROWS = 3000
SMALL = {"expert_hidden": (16,), "tower_hidden": (16,)}


def problem():
    spec, columns = synthetic.easy_multitask_problem(TRAIN_ROWS + ROWS_PER_DAY * (len(DATES) + 1), seed=0)
    return spec, columns


def day_frame(columns: dict, index: int, date: str) -> pd.DataFrame:
    start = TRAIN_ROWS + index * ROWS_PER_DAY
    rows = slice(start, start + ROWS_PER_DAY)
    frame = pd.DataFrame({name: (list(values[rows]) if values.ndim > 1 else values[rows])
                          for name, values in columns.items()})
    frame["dt"] = date
    return frame


EXAMPLES_DDL = ("user_idx INT, item_idx INT, hour INT, tag_idx ARRAY<INT>, user_ctr FLOAT, item_quality FLOAT, "
                "play INT, watch_ratio FLOAT, share INT, dt STRING")


def write_days(spark, table: str, frames: list[pd.DataFrame], mode: str = "append", replace_date: str | None = None):
    frame = pd.concat(frames, ignore_index=True)
    frame["tag_idx"] = frame["tag_idx"].map(lambda ids: [int(i) for i in ids])
    for column in ("user_idx", "item_idx", "hour", "play", "share"):
        frame[column] = frame[column].astype("int32")
    frame["watch_ratio"] = frame["watch_ratio"].astype("float32").astype(object).where(frame["watch_ratio"].notna(), None)
    writer = spark.createDataFrame(frame, EXAMPLES_DDL).write.format("delta").partitionBy("dt").mode(mode)
    if replace_date is not None:
        writer = writer.option("replaceWhere", f"dt = '{replace_date}'")
    writer.save(table)


def train_tiny(model_name: str, out: Path, *, steps: int = 150, seed: int = 0,
               **hyperparameters) -> Path:
    """Train on the first TRAIN_ROWS rows (not in any day of the table) and save <out>/model.pt."""
    spec, columns = problem()
    torch.manual_seed(seed)
    params = {**(SMALL if model_name != "single_task" else {"bottom_hidden": (16,), "tower_hidden": (16,)}),
              **hyperparameters}
    model = build_model(model_name, spec, **params)
    tensors = synthetic.to_tensors({k: v[:TRAIN_ROWS] for k, v in columns.items()})
    features = {n: tensors[n] for n in spec.feature_names}
    labels, masks = {}, {}
    for task in spec.tasks:
        label = tensors[task.label].clone()
        space = ~torch.isnan(label)
        if task.mask:
            space &= tensors[task.mask] > 0
        labels[task.name] = torch.nan_to_num(label, nan=0.0)
        masks[task.name] = space.float()
    if steps:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        batch_generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            index = torch.randint(0, TRAIN_ROWS, (256,), generator=batch_generator)
            outputs = model({n: v[index] for n, v in features.items()})
            task_losses = losses.masked_task_losses(spec, outputs, {t: v[index] for t, v in labels.items()},
                                                    {t: v[index] for t, v in masks.items()})
            loss = sum(task_losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return save_model(out / "model.pt", model, spec, model_name, dict(model.hyperparameters),
                      metadata={"epoch": 1, "note": "tests/evaluation tiny model"})
