"""Synthetic but realistic raw logs for the pipeline (numpy, no Spark): `ple generate`."""

from datagen.events import FaultRates, GeneratorSettings, generate

__all__ = ["FaultRates", "GeneratorSettings", "generate"]
