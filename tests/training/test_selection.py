"""Model selection and early stopping (training/selection.py) on scripted validation metrics."""

from __future__ import annotations

import math

import pytest

from ple_model import ModelSpec
from training.selection import BestEpoch, MeanNormalized, PerTask, build_selection, task_metrics

SPEC = ModelSpec.model_validate({
    "features": [{"name": "x", "type": "numeric"}],
    "tasks": [{"name": "play", "type": "binary"}, {"name": "watch", "type": "regression"},
              {"name": "share", "type": "binary"}],
})


def metrics(play, watch, share):
    return {"play": {"auc": play, "logloss": 0.5}, "watch": {"mse": watch, "mae": 0.1},
            "share": {"auc": share, "logloss": 0.1}}


EPOCHS = [metrics(0.70, 0.050, 0.60), metrics(0.75, 0.045, 0.58), metrics(0.76, 0.049, 0.55),
          metrics(0.74, 0.052, 0.62)]


def test_default_task_metrics_and_bad_names():
    assert task_metrics(SPEC, {}) == {"play": "auc", "watch": "mse", "share": "auc"}
    assert task_metrics(SPEC, {"share": "logloss"})["share"] == "logloss"
    with pytest.raises(ValueError, match="unknown tasks \\['nope'\\]"):
        task_metrics(SPEC, {"nope": "auc"})
    with pytest.raises(ValueError, match="'auc' for regression task 'watch'"):
        task_metrics(SPEC, {"watch": "auc"})


def test_mean_normalized_by_hand_against_the_first_epoch():
    selection = build_selection("mean_normalized", SPEC, patience=5, metrics_by_task=task_metrics(SPEC, {}))
    for epoch, values in enumerate(EPOCHS):
        selection.observe(epoch, values)
    # mean of (auc - r)/r for play and share and (r - mse)/r for watch
    expected = [0.0,
                ((0.75 - 0.70) / 0.70 + (0.050 - 0.045) / 0.050 + (0.58 - 0.60) / 0.60) / 3,
                ((0.76 - 0.70) / 0.70 + (0.050 - 0.049) / 0.050 + (0.55 - 0.60) / 0.60) / 3,
                ((0.74 - 0.70) / 0.70 + (0.050 - 0.052) / 0.050 + (0.62 - 0.60) / 0.60) / 3]
    assert selection.values == pytest.approx(expected)
    # play alone would pick epoch 2 (0.76); the criterion picks epoch 1, where all three tasks weigh in.
    assert selection.best_epoch == 1
    record = selection.record([{"epoch": e, "validation": v} for e, v in enumerate(EPOCHS)])
    assert record["criterion"] == "mean_normalized" and record["chosen_epoch"] == 1
    assert record["selected_metrics"] == EPOCHS[1]
    assert record["definition"]["tasks"]["watch"] == {"metric": "mse", "direction": "min"}
    assert record["definition"]["reference"]["metrics"] == {"play": 0.70, "watch": 0.050, "share": 0.60}


def test_mean_normalized_against_a_baseline_and_a_task_without_reference():
    baseline = metrics(0.80, 0.040, math.nan)   # e.g. share AUC undefined in the baseline run
    criterion = MeanNormalized(task_metrics(SPEC, {}), reference=baseline, reference_source="runs/single_task")
    value = criterion.value(EPOCHS[0])
    assert value == pytest.approx(((0.70 - 0.80) / 0.80 + (0.040 - 0.050) / 0.040) / 2)
    assert criterion.describe()["excluded_tasks"] == ["share"]


def test_early_stopping_counts_epochs_without_improvement():
    selection = BestEpoch(MeanNormalized(task_metrics(SPEC, {})), patience=2)
    decisions = [selection.observe(e, v) for e, v in enumerate(EPOCHS)]
    assert [d.save for d in decisions] == [True, True, False, False]
    assert [d.stop for d in decisions] == [False, False, False, True]
    assert decisions[0].tasks is None   # the whole model


def test_single_metric_direction_and_nan_never_improves():
    selection = build_selection("metric", SPEC, patience=3, metrics_by_task={}, early_stop_metric="watch.mse",
                                direction="min")
    decisions = [selection.observe(e, v) for e, v in enumerate(EPOCHS)]
    assert selection.best_epoch == 1 and [d.save for d in decisions] == [True, True, False, False]
    nan = build_selection("metric", SPEC, patience=3, metrics_by_task={}, early_stop_metric="play.auc",
                          direction="max")
    assert nan.observe(0, metrics(math.nan, 0.1, 0.5)).save is False
    assert nan.observe(1, metrics(0.6, 0.1, 0.5)).save is True and nan.best()["epoch"] == 1


def test_per_task_selection_picks_each_tasks_own_best_epoch():
    selection = PerTask(task_metrics(SPEC, {}), patience=2)
    decisions = [selection.observe(e, v) for e, v in enumerate(EPOCHS)]
    # play peaks at epoch 2, watch (MSE, lower is better) at epoch 1, share at epoch 3
    assert selection.best_epoch == {"play": 2, "watch": 1, "share": 3}
    assert [d.tasks for d in decisions] == [["play", "watch", "share"], ["play", "watch"], ["play"], ["share"]]
    assert [d.stop for d in decisions] == [False, False, False, False]
    record = selection.record([{"epoch": e, "validation": v} for e, v in enumerate(EPOCHS)])
    assert record["selected_metrics"] == {"play": EPOCHS[2]["play"], "watch": EPOCHS[1]["watch"],
                                          "share": EPOCHS[3]["share"]}
    # stops only when EVERY task has gone `patience` epochs without improving
    more = PerTask(task_metrics(SPEC, {}), patience=1)
    flat = [more.observe(e, metrics(0.7, 0.05, 0.6 + 0.01 * (e == 1))) for e in range(3)]
    assert [d.stop for d in flat] == [False, False, True]


def test_selection_state_survives_a_round_trip():
    first = BestEpoch(MeanNormalized(task_metrics(SPEC, {})), patience=2)
    first.observe(0, EPOCHS[0])
    first.observe(1, EPOCHS[1])
    again = BestEpoch(MeanNormalized(task_metrics(SPEC, {})), patience=2)
    again.load_state_dict(first.state_dict())
    assert again.observe(2, EPOCHS[2]).save == first.observe(2, EPOCHS[2]).save
    assert again.values == first.values and again.best_epoch == first.best_epoch == 1
