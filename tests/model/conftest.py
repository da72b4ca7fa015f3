import pytest
import torch

from ple_model import model_inputs, synthetic


@pytest.fixture(autouse=True)
def _few_threads():
    # The CI box has 2 cores shared with Spark jobs: with 2 intra-op threads on a
    # loaded box, OpenMP barriers made small-model steps ~50x slower than 1 thread.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def easy_problem():
    spec, columns = synthetic.easy_multitask_problem(512, seed=3)
    features, labels, masks = model_inputs(columns, spec).to_tensors()
    return spec, features, labels, masks


SMALL = {"expert_hidden": [16], "tower_hidden": [16, 8]}
