"""Serving exports of a model: TorchScript and ONNX, checked against PyTorch.

Both take the features as POSITIONAL tensors in spec order (dict inputs do not
export well to ONNX) and return one tensor per task in spec order:
probabilities for binary tasks, values for regression tasks (what a ranking
service multiplies), each of shape (batch,). When the model carries a post-hoc
calibration (ple_model.calibration), the exports apply it: serving needs
nothing else. Dtypes: categorical and
multi_categorical ids int64 ((batch,) and (batch, max_len)), numeric float32.

ONNX: the torch.export-based exporter (torch's default since 2.9) with a
dynamic batch dimension; when it fails on a model the TorchScript-based one
is tried (recorded in the export info). The ONNX Runtime outputs must match
PyTorch's within `tolerance` (default 1e-5) on a sample batch, else
ExportMismatch. TorchScript is `torch.jit.trace` of the same wrapper, checked
the same way on a batch of another size (so a batch size baked into the trace
is caught). With a calibration, the tolerance applies to the model's own
outputs: an export's calibrated value must lie between PyTorch's calibrated
values of (raw - tolerance) and (raw + tolerance). Isotonic maps have steep
pieces (between blocks), where float rounding of the raw output (1e-7) moves the calibrated one
by far more than 1e-5; the mapping is monotone, so this band is exact.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ple_model import ModelSpec
from ple_runtime.errors import StageError


class ExportMismatch(StageError):
    """An exported model does not reproduce PyTorch's outputs."""


class PositionalModel(nn.Module):
    """model({name: tensor}) -> tuple of per-task predictions, taking features positionally in spec order."""

    def __init__(self, model: nn.Module, spec: ModelSpec, calibration: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.calibration = calibration
        self.feature_names = list(spec.feature_names)
        self.task_names = list(spec.task_names)
        self.binary = [task.type == "binary" for task in spec.tasks]

    def raw(self, *features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions before calibration (probabilities / values), by task."""
        outputs = self.model({name: value for name, value in zip(self.feature_names, features)})
        return {name: torch.sigmoid(outputs[name]) if binary else outputs[name]
                for name, binary in zip(self.task_names, self.binary)}

    def forward(self, *features: torch.Tensor):
        predictions = self.raw(*features)
        if self.calibration is not None:
            predictions = self.calibration(predictions)
        return tuple(predictions[name] for name in self.task_names)

    @torch.no_grad()
    def expected_band(self, features: tuple[torch.Tensor, ...], tolerance: float) -> tuple[dict, dict]:
        """(lowest, highest) acceptable output per task: PyTorch's output, widened to the calibrated
        values of raw -/+ tolerance when a (monotone) calibration follows."""
        raw = self.raw(*features)
        if self.calibration is None:
            return raw, raw
        return (self.calibration({k: v - tolerance for k, v in raw.items()}),
                self.calibration({k: v + tolerance for k, v in raw.items()}))


def signature(spec: ModelSpec, calibration: nn.Module | None = None) -> dict[str, Any]:
    inputs = []
    for feature in spec.features:
        if feature.type == "numeric":
            inputs.append({"name": feature.name, "dtype": "float32", "shape": ["batch"]})
        elif feature.type == "categorical":
            inputs.append({"name": feature.name, "dtype": "int64", "shape": ["batch"],
                           "vocab_size": feature.vocab_size})
        else:
            inputs.append({"name": feature.name, "dtype": "int64", "shape": ["batch", feature.max_len],
                           "vocab_size": feature.vocab_size})
    calibrated = set(getattr(calibration, "task_names", []))
    outputs = [{"name": t.name, "dtype": "float32", "shape": ["batch"],
                "meaning": ("calibrated " if t.name in calibrated else "")
                + ("probability" if t.type == "binary" else "value")} for t in spec.tasks]
    return {"inputs": inputs, "outputs": outputs,
            "calibration": getattr(calibration, "method", None)}


def sample_inputs(spec: ModelSpec, features: dict[str, Any] | None, rows: int) -> tuple[torch.Tensor, ...]:
    """`rows` rows of real features when given (numpy or tensors, cycled if fewer), else random valid ones."""
    generator = torch.Generator().manual_seed(0)
    result = []
    for feature in spec.features:
        if features is not None and feature.name in features and len(features[feature.name]) > 0:
            values = torch.as_tensor(features[feature.name])
            index = torch.arange(rows) % len(values)
            result.append(values[index].contiguous())
        elif feature.type == "numeric":
            result.append(torch.randn(rows, generator=generator))
        elif feature.type == "categorical":
            result.append(torch.randint(0, int(feature.vocab_size), (rows,), generator=generator))
        else:
            result.append(torch.randint(0, int(feature.vocab_size), (rows, int(feature.max_len)), generator=generator))
    return tuple(result)


def _differences(wrapper: PositionalModel, check: tuple[torch.Tensor, ...], actual: list[np.ndarray],
                 tolerance: float) -> dict[str, float]:
    """Per task, how far an export's outputs fall outside PyTorch's band (0 inside it), or their
    largest distance from PyTorch's outputs when there is no calibration."""
    low, high = wrapper.expected_band(check, tolerance)
    differences = {}
    for name, values in zip(wrapper.task_names, actual):
        values = np.asarray(values, dtype=np.float64)
        lo, hi = low[name].double().numpy(), high[name].double().numpy()
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)  # a decreasing map (Platt with a < 0) swaps them
        if wrapper.calibration is None:
            differences[name] = float(np.max(np.abs(values - lo))) if values.size else 0.0
        else:  # outside [lo, hi] by this much (tolerance is added back by _check's comparison)
            outside = np.maximum(lo - values, values - hi).clip(min=0.0)
            differences[name] = float(outside.max()) if values.size else 0.0
    return differences


def _check(differences: dict[str, float], tolerance: float, what: str) -> None:
    bad = {k: v for k, v in differences.items() if not v <= tolerance}
    if bad:
        raise ExportMismatch(f"{what} outputs differ from PyTorch's by more than {tolerance:g}: "
                             + ", ".join(f"{k}: {v:.3g}" for k, v in bad.items()))


def export_torchscript(wrapper: PositionalModel, example: tuple[torch.Tensor, ...], check: tuple[torch.Tensor, ...],
                       path: Path, tolerance: float) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript deprecation notices; the check below is what matters
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        torch.jit.save(traced, str(path))
        reloaded = torch.jit.load(str(path))
    with torch.no_grad():
        actual = [o.numpy() for o in reloaded(*check)]
    differences = _differences(wrapper, check, actual, tolerance)
    _check(differences, tolerance, "TorchScript")
    return {"file": path.name, "max_abs_difference": differences, "check_rows": int(len(check[0]))}


def _onnx_export(wrapper: PositionalModel, example: tuple[torch.Tensor, ...], path: Path, exporter: str) -> None:
    names = wrapper.feature_names
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        torch.onnx.export(wrapper, example, str(path), input_names=names, output_names=wrapper.task_names,
                          dynamic_shapes=(tuple({0: batch} for _ in example),), dynamo=True, verbose=False,
                          external_data=False)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapper, example, str(path), input_names=names, output_names=wrapper.task_names,
                              dynamic_axes={n: {0: "batch"} for n in [*names, *wrapper.task_names]}, dynamo=False,
                              opset_version=17)


def export_onnx(wrapper: PositionalModel, example: tuple[torch.Tensor, ...], check: tuple[torch.Tensor, ...],
                path: Path, tolerance: float, exporter: str = "dynamo") -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    attempts = [exporter] + (["torchscript"] if exporter == "dynamo" else [])
    errors = {}
    for attempt in attempts:
        try:
            _onnx_export(wrapper, example, path, attempt)
            break
        except Exception as error:  # noqa: BLE001 (try the other exporter, report both if both fail)
            errors[attempt] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    else:
        raise ExportMismatch(f"ONNX export failed: {errors}")
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), check)}
    actual = session.run(wrapper.task_names, feeds)
    differences = _differences(wrapper, check, actual, tolerance)
    _check(differences, tolerance, "ONNX Runtime")
    return {"file": path.name, "exporter": attempt, "exporter_errors": errors, "opset": _opset(path),
            "max_abs_difference": differences, "check_rows": int(len(check[0])), "onnxruntime": ort.__version__}


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


EXAMPLE_ROWS = 64     # rows the exports are traced on
CHECK_ROWS = 256      # rows they are checked on (the first rows of `features`; both batches cut from them)
EXPORT_ROWS = max(EXAMPLE_ROWS, CHECK_ROWS)   # rows of `features` the two batches need


def export_model(model: nn.Module, spec: ModelSpec, out_dir: Path, features: dict[str, Any] | None = None,
                 tolerance: float = 1e-5, exporter: str = "dynamo", check_rows: int = CHECK_ROWS,
                 calibration: nn.Module | None = None) -> dict[str, Any]:
    """Write model.torchscript.pt and model.onnx into out_dir (calibrated outputs when a calibration is given),
    both checked against PyTorch; returns what was checked."""
    wrapper = PositionalModel(model.cpu().eval(), spec, calibration.cpu().eval() if calibration else None).eval()
    # Trace/export on one batch size and check on another: a size baked into the graph fails the check.
    example = sample_inputs(spec, features, EXAMPLE_ROWS)
    check = sample_inputs(spec, features, check_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "signature": signature(spec, calibration),
        "torchscript": export_torchscript(wrapper, example, check, out_dir / "model.torchscript.pt", tolerance),
        "onnx": export_onnx(wrapper, example, check, out_dir / "model.onnx", tolerance, exporter),
        "tolerance": tolerance,
    }
