"""Publishing a model: the quality gate, the checked exports (TorchScript, ONNX), the bundle registered
in the MLflow registry under a lease, and the alias move (docs/EVALUATION.md).

    from publishing.config import PublishConfig           # `ple publish`'s settings
    from publishing.publish import run                    # gate + bundle + registry + alias, under a lease
    from publishing.gate import check_gate, Tolerances    # the quality gate
    from publishing.export import export_model            # TorchScript + ONNX, checked against PyTorch
    from publishing.lease import publish_lease            # publishers serialise through the registry

Scoring comes from evaluation/; the registry, model references and bundles from model_registry/.
"""
