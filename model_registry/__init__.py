"""Where models live and how a reference to one is resolved; read by training (warm start), evaluation,
publishing and `ple maintain`, so none of those imports another to find a model.

    from model_registry.model_refs import load_model_ref  # run folder / model.pt / models:/name/3 / @production
    from model_registry.registry import registry_settings, version_by_alias   # the MLflow registry
    from model_registry.bundle import verify_bundle       # a published bundle's manifest
    from model_registry.pins import registered_pins       # table versions registered models pin (`ple maintain`)
"""
