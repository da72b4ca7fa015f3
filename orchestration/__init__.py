"""Commands that chain stages: `ple pipeline` (orchestration/pipeline.py: generate -> extract -> train ->
evaluate -> publish, each through the `run(config)` its own job calls) and `ple experiment`
(orchestration/experiment.py: models x seeds trained and scored on the same rows). Both reuse finished
training runs through one "reuse or train" (orchestration/runs.py) and score through evaluation's one
scoring core. Settings: orchestration/config.py.
"""
