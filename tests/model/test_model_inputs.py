"""`ple_model.model_inputs`: the one table-batch -> (features, labels, masks) rule training and evaluation share."""

import numpy as np
import pandas as pd
import pytest
import torch

from ple_model import ModelSpec, model_inputs

SPEC = ModelSpec.model_validate({
    "features": [
        {"name": "user", "type": "categorical", "vocab_size": 10, "embedding_dim": 2},
        {"name": "ctr", "type": "numeric"},
        {"name": "tags", "type": "multi_categorical", "vocab_size": 9, "embedding_dim": 2, "max_len": 3},
    ],
    "tasks": [
        {"name": "play", "type": "binary", "label": "played"},
        {"name": "watch", "type": "regression", "label": "watch_ratio", "mask": "played"},
        {"name": "buy", "type": "binary", "label": "bought", "mask": "clicked"},
    ],
})


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user": pd.array([3, None, 7, 1], dtype="Int64"),
        "ctr": [0.5, np.nan, -1.0, 2.0],
        "tags": [[1, 2], None, [4, 5, 6, 7], [np.nan, 3, 0]],
        "played": pd.array([1, 0, 1, None], dtype="Int64"),
        "watch_ratio": [0.9, np.nan, np.nan, 0.3],
        "bought": pd.array([True, None, False, True], dtype="boolean"),
        "clicked": [1.0, 1.0, 1.0, 0.0],
        "unused": ["a", "b", "c", "d"],
    })


def test_nulls_become_the_oov_id_zero_and_padding_by_hand():
    features, labels, masks = model_inputs(_frame(), SPEC)
    assert features["user"].dtype == np.int64 and features["user"].tolist() == [3, 0, 7, 1]
    assert features["ctr"].dtype == np.float32 and features["ctr"].tolist() == [0.5, 0.0, -1.0, 2.0]
    # padded with 0 to max_len 3, truncated beyond it, a null row is all padding, a NaN id is 0
    assert features["tags"].dtype == np.int64
    assert features["tags"].tolist() == [[1, 2, 0], [0, 0, 0], [4, 5, 6], [0, 3, 0]]


def test_sample_space_is_mask_column_and_label_present_by_hand():
    features, labels, masks = model_inputs(_frame(), SPEC)
    # play: no mask column; row 3's label is null -> out of its space
    assert masks["play"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert labels["play"].tolist() == [1.0, 0.0, 1.0, 0.0]
    # watch: mask `played` (row 3 null -> 0) AND label present (row 2 NaN although played)
    assert masks["watch"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert labels["watch"].tolist() == pytest.approx([0.9, 0.0, 0.0, 0.0])
    # buy: nullable boolean label; mask `clicked` removes row 3, the null label row 1
    assert masks["buy"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert labels["buy"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert all(v.dtype == np.float32 for v in [*labels.values(), *masks.values()])


def test_numpy_and_tensor_columns_give_the_same_inputs_as_a_frame():
    frame = pd.DataFrame({"user": [1, 2], "ctr": [0.1, 0.2], "tags": [[1, 2, 3], [4, 0, 0]],
                          "played": [1, 0], "watch_ratio": [0.5, np.nan], "bought": [1.0, 0.0], "clicked": [1, 1]})
    from_frame = model_inputs(frame, SPEC)
    arrays = {name: (np.stack(frame[name].to_numpy()) if name == "tags" else frame[name].to_numpy())
              for name in frame}
    tensors = {name: torch.as_tensor(values) for name, values in arrays.items()}
    for other in (model_inputs(arrays, SPEC), model_inputs(tensors, SPEC)):
        for part, expected in zip(other, from_frame):
            assert set(part) == set(expected)
            for name in part:
                np.testing.assert_array_equal(part[name], expected[name])
    features, labels, masks = from_frame.to_tensors()
    assert features["tags"].shape == (2, 3) and features["user"].dtype == torch.int64


def test_missing_columns_are_named():
    frame = _frame().drop(columns=["clicked", "ctr"])
    with pytest.raises(KeyError, match=r"lacks columns \['ctr', 'clicked'\]"):
        model_inputs(frame, SPEC)
