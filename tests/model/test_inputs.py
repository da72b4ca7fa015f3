import torch

from ple_model import FeatureInput, ModelSpec


def _spec():
    return ModelSpec.model_validate({
        "features": [
            {"name": "user", "type": "categorical", "vocab_size": 5, "embedding_dim": 3},
            {"name": "item", "type": "categorical", "vocab_size": 7, "embedding_dim": 3},
            {"name": "hour", "type": "categorical", "vocab_size": 4, "embedding_dim": 2},
            {"name": "tags", "type": "multi_categorical", "vocab_size": 6, "embedding_dim": 2, "max_len": 3},
            {"name": "ctr", "type": "numeric"},
        ],
        "tasks": [{"name": "play", "type": "binary", "label": "play"}],
    })


def _features(user, item=None):
    n = len(user)
    return {"user": torch.tensor(user), "item": torch.tensor(item or [1] * n), "hour": torch.zeros(n, dtype=torch.long),
            "tags": torch.tensor([[1, 2, 0]] * n), "ctr": torch.linspace(0, 1, n)}


def test_out_of_vocabulary_ids_map_to_id_zero():
    layer = FeatureInput(_spec())
    # user vocab is 5: 5, 99 and -1 are out of range and must embed like id 0.
    out = layer(_features([0, 5, 99, -1, 3]))
    user_part = out[:, :3]
    for row in (1, 2, 3):
        assert torch.equal(user_part[row], user_part[0])
    assert not torch.equal(user_part[4], user_part[0])
    assert out.shape == (5, _spec().input_dim)


def test_multi_categorical_is_a_mean_over_non_padding_ids_and_numeric_is_appended():
    layer = FeatureInput(_spec())
    features = _features([1, 1])
    features["tags"] = torch.tensor([[1, 2, 0], [0, 0, 0]])
    out = layer(features)
    table = layer.multi_categorical[0].table
    # output order: categorical groups by dim (2: hour; 3: user, item), multi_categorical, numeric
    tags = out[:, 2 + 6:2 + 6 + 2]
    torch.testing.assert_close(tags[0], (table[1] + table[2]) / 2)
    torch.testing.assert_close(tags[1], torch.zeros(2))
    torch.testing.assert_close(out[:, -1], features["ctr"])
    # id 7 >= vocab 6 in a multi_categorical is padding too
    features["tags"] = torch.tensor([[1, 2, 7], [0, 0, 0]])
    torch.testing.assert_close(layer(features)[:, 8:10], out[:, 8:10])
