import textwrap

import pytest
from pydantic import ValidationError

from ple_model import ModelSpec, SpecError, build_model, model_inputs

ARCHITECTURE_EXAMPLE = textwrap.dedent("""
    features:
      - {name: user_idx, type: categorical, vocab_size: 5000, embedding_dim: 16}
      - {name: hour, type: categorical, vocab_size: 24, embedding_dim: 4}
      - {name: user_ctr_7d, type: numeric}
      - {name: tag_idx, type: multi_categorical, vocab_size: 200, embedding_dim: 8, max_len: 5}
    tasks:
      - {name: play, type: binary, label: play, weight: 1.0, decay: 1.0}
      - {name: watch_ratio, type: regression, label: watch_ratio, mask: play}
      - {name: share, type: binary, label: share}
      - {name: comment, type: binary, label: comment}
""")


def _spec(features=None, tasks=None):
    return {
        "features": features if features is not None else [
            {"name": "user_idx", "type": "categorical", "vocab_size": 10, "embedding_dim": 4}],
        "tasks": tasks if tasks is not None else [{"name": "play", "type": "binary", "label": "play"}],
    }


def test_architecture_example_loads(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(ARCHITECTURE_EXAMPLE)
    spec = ModelSpec.from_yaml(path)
    assert spec.feature_names == ["user_idx", "hour", "user_ctr_7d", "tag_idx"]
    assert spec.task_names == ["play", "watch_ratio", "share", "comment"]
    assert spec.task("watch_ratio").mask == "play"
    assert spec.task("share").weight == 1.0 and spec.task("share").decay == 1.0
    assert spec.input_dim == 16 + 4 + 1 + 8
    spec.to_yaml(tmp_path / "again.yaml")
    assert ModelSpec.from_yaml(tmp_path / "again.yaml") == spec


@pytest.mark.parametrize("spec, message", [
    (_spec(features=[{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}]), "duplicate feature names: ['a']"),
    (_spec(tasks=[{"name": "t", "type": "binary", "label": "x"}, {"name": "t", "type": "binary", "label": "y"}]),
     "duplicate task names: ['t']"),
    (_spec(features=[{"name": "a", "type": "dense"}]), "unknown feature type 'dense'"),
    (_spec(tasks=[{"name": "t", "type": "ranking", "label": "t"}]), "unknown task type 'ranking'"),
    (_spec(tasks=[]), "spec has no tasks"),
    (_spec(features=[]), "spec has no features"),
    (_spec(features=[{"name": "a", "type": "categorical", "vocab_size": 10, "embedding_dim": 0}]),
     "embedding_dim must be positive"),
    (_spec(features=[{"name": "a", "type": "categorical", "vocab_size": -3, "embedding_dim": 4}]),
     "vocab_size must be positive"),
    (_spec(features=[{"name": "a", "type": "categorical", "vocab_size": 10}]), "needs an embedding_dim"),
    (_spec(features=[{"name": "a", "type": "multi_categorical", "vocab_size": 10, "embedding_dim": 4}]),
     "needs a max_len"),
    (_spec(features=[{"name": "a", "type": "categorical", "embedding_dim": 4}]), "needs a vocab_size, or a `vocabulary`"),
    (_spec(features=[{"name": "a", "type": "numeric", "embedding_dim": 4}]), "is numeric and cannot have"),
    (_spec(tasks=[{"name": "t", "type": "binary", "label": "t", "decay": 0.0}]), "decay must be in (0, 1]"),
    (_spec(tasks=[{"name": "t", "type": "binary", "label": "t", "decay": 1.5}]), "decay must be in (0, 1]"),
    (_spec(tasks=[{"name": "t", "type": "binary", "label": "t", "weight": -1}]), "weight must be >= 0"),
    (_spec(tasks=[{"name": "t", "type": "binary", "label": "user_idx"}]), "is also an input feature"),
    (_spec(tasks=[{"name": "t", "type": "binary", "label": "t", "colour": "red"}]), "Extra inputs are not permitted"),
])
def test_bad_specs_fail_with_a_clear_message(spec, message):
    with pytest.raises(ValidationError) as error:
        ModelSpec.model_validate(spec)
    assert message in str(error.value)


def test_missing_vocab_size_fails_at_build_time_and_with_vocab_sizes_fills_it():
    template = ModelSpec.model_validate(_spec(features=[
        {"name": "user_idx", "type": "categorical", "vocabulary": "users", "embedding_dim": 4},
        {"name": "ctr", "type": "numeric"}]))
    with pytest.raises(SpecError, match="feature 'user_idx' has no vocab_size; .*'users'"):
        build_model("ple", template)
    filled = template.with_vocab_sizes({"user_idx": 17})
    assert filled.features[0].vocab_size == 17
    assert template.features[0].vocab_size is None  # a new spec; the template is unchanged
    build_model("ple", filled)
    with pytest.raises(SpecError, match="unknown features \\['nope'\\]"):
        template.with_vocab_sizes({"nope": 3})
    with pytest.raises(SpecError, match="is numeric"):
        template.with_vocab_sizes({"ctr": 3})


def test_label_defaults_to_task_name_and_model_inputs_key_labels_by_task():
    spec = ModelSpec.model_validate(_spec(tasks=[{"name": "play", "type": "binary"},
                                                 {"name": "vcr", "type": "regression", "label": "watch", "mask": "play"}]))
    assert spec.task("play").label == "play"
    batch = {"user_idx": [1], "play": [1.0], "watch": [0.5]}
    features, labels, masks = model_inputs(batch, spec)
    assert features["user_idx"].tolist() == [1]
    assert {k: v.tolist() for k, v in labels.items()} == {"play": [1.0], "vcr": [0.5]}
    # Every task gets a mask now (spec mask AND label present); play has no mask column: label present = in space.
    assert {k: v.tolist() for k, v in masks.items()} == {"play": [1.0], "vcr": [1.0]}
    with pytest.raises(KeyError, match="lacks columns \\['watch'\\]"):
        model_inputs({"user_idx": [1], "play": [1.0]}, spec)


def test_with_task_weights_replaces_the_named_tasks_weights_only():
    import yaml

    from ple_model.weighting import build_weighting

    spec = ModelSpec.model_validate(yaml.safe_load(ARCHITECTURE_EXAMPLE))
    weighted = spec.with_task_weights({"comment": 3})
    assert {t.name: t.weight for t in weighted.tasks} == {"play": 1.0, "watch_ratio": 1.0, "share": 1.0, "comment": 3.0}
    assert spec.task("comment").weight == 1.0   # the spec itself is unchanged
    assert build_weighting("static", weighted).current_weights(0)["comment"] == 3.0
    with pytest.raises(SpecError, match=r"unknown tasks \['click'\]"):
        spec.with_task_weights({"click": 2.0})
    with pytest.raises(ValueError, match="weight must be >= 0"):
        spec.with_task_weights({"share": -1.0})
