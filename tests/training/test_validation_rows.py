"""training.validation_rows: what validation and calibration keep of each row (compact), and the metrics
computed from it equal those of the float arrays a whole read gives."""

import numpy as np
import pytest

from ple_model import ModelSpec
from ple_model.metrics import evaluate_tasks
from training.validation_rows import ValidationRows
from training.world import SingleProcessWorld


@pytest.fixture
def spec():
    return ModelSpec.model_validate({
        "features": [{"name": "x", "type": "numeric"}],
        "tasks": [{"name": "play", "type": "binary", "label": "play"},
                  {"name": "watch", "type": "regression", "label": "watch", "mask": "play"}],
    })


def _day(rng, rows):
    play = (rng.random(rows) < 0.3).astype(np.float32)
    predictions = {"play": rng.random(rows).astype(np.float32), "watch": rng.random(rows).astype(np.float32)}
    labels = {"play": play, "watch": (rng.random(rows) * play).astype(np.float32)}
    masks = {"play": (rng.random(rows) < 0.95).astype(np.float32), "watch": play}
    return predictions, labels, masks


def test_rows_kept_in_batches_give_the_metrics_of_the_whole_float_arrays(spec):
    rng = np.random.default_rng(0)
    predictions, labels, masks = _day(rng, 10_000)
    kept = ValidationRows(spec, 10_000)
    for start in range(0, 10_000, 3_000):   # the last batch shorter
        part = slice(start, start + 3_000)
        assert kept.fill(*({t: v[part] for t, v in d.items()} for d in (predictions, labels, masks)))
    assert kept.filled == kept.rows == 10_000
    assert not kept.fill(*({t: v[:1] for t, v in d.items()} for d in (predictions, labels, masks))), \
        "a row past the footers' count was kept"
    gathered = kept.gather(SingleProcessWorld())
    assert kept.labels["play"].dtype.itemsize == kept.masks["play"].dtype.itemsize == 1
    expected = evaluate_tasks(spec, predictions, labels, masks)
    metrics = gathered.metrics()
    for task in ("play", "watch"):
        assert metrics[task]["count"] == expected[task]["count"] > 0
        for name, value in expected[task].items():
            assert metrics[task][name] == pytest.approx(value, rel=1e-12, abs=1e-15), (task, name)


def test_a_binary_label_that_is_not_0_or_1_is_refused_not_truncated(spec):
    predictions, labels, masks = _day(np.random.default_rng(1), 10)
    labels["play"][3] = 0.5
    with pytest.raises(ValueError, match="play.*0 or 1"):
        ValidationRows(spec, 10).fill(predictions, labels, masks)
