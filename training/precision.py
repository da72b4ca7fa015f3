"""Which arithmetic `ple train`'s forward pass runs in: TrainConfig `precision: fp32 | bf16 | auto`.

bf16 is mixed precision: `ple_model.autocast` (torch.autocast, bfloat16) around the model's forward
ONLY. The weights stay fp32 (master weights: the optimizers, gradient exchange, checkpoints and
model.pt see fp32 tensors), the model's outputs are cast back to fp32 (ple_model/models.py) and the
losses, the task weighting and validation run in fp32. Embedding lookups are not autocast ops: the
tables, their (sparse) gradients and their optimizers stay fp32 too.

`auto` picks bf16 where the hardware multiplies bf16 natively, fp32 elsewhere:
- CUDA: `torch.cuda.is_bf16_supported()` (Ampere and later);
- CPU: the `amx_bf16` flag in /proc/cpuinfo (Intel AMX, Sapphire Rapids and later). Without AMX,
  oneDNN emulates bf16 (or uses AVX512-BF16 dot products only): not worth the rounding there.
It is resolved on each worker (a Spark executor's CPU may not be the driver's); the workers must
agree, else every one runs fp32. The run record's `precision` says which path ran and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "auto")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux; empty where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


@dataclass(frozen=True)
class Precision:
    setting: str     # what the config asked for
    resolved: str    # "fp32" or "bf16": what the forward pass runs in
    reason: str      # why, in words (into the run record)
    hardware: str    # the device and the flags that decided

    def record(self) -> dict[str, str]:
        return asdict(self)


def _hardware(device: torch.device, flags: set[str] | None) -> tuple[bool, str]:
    """(multiplies bf16 natively, a description of the hardware)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return bool(torch.cuda.is_bf16_supported()), f"CUDA {name}"
    flags = cpu_flags() if flags is None else flags
    shown = sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f")))
    return "amx_bf16" in flags, f"CPU flags {' '.join(shown) or '(no AMX/AVX-512)'}"


def resolve_precision(setting: str, device: torch.device, flags: set[str] | None = None) -> Precision:
    """The precision this worker's forward pass runs in (module doc); `flags`: the CPU's (default: this one's)."""
    if setting not in PRECISIONS:
        raise ValueError(f"unknown precision {setting!r}; valid: {list(PRECISIONS)}")
    native, hardware = _hardware(device, flags)
    kind = "GPU supports bf16" if device.type == "cuda" else "CPU has AMX (amx_bf16)"
    lacks = "GPU lacks bf16" if device.type == "cuda" else "CPU lacks amx_bf16"
    if setting == "auto":
        return Precision(setting, "bf16" if native else "fp32", kind if native else lacks, hardware)
    if setting == "bf16" and not native:
        return Precision(setting, "bf16", f"set to bf16 ({lacks}: bf16 is emulated, may be slower than fp32)",
                         hardware)
    return Precision(setting, setting, f"set to {setting}", hardware)


def agreed(precision: Precision, world) -> Precision:
    """All workers run one precision: bf16 only where every worker resolved bf16."""
    everywhere = world.allreduce_min_int(int(precision.resolved == "bf16"), "precision_bf16")
    if precision.resolved == "bf16" and not everywhere:
        return Precision(precision.setting, "fp32", "another worker resolved fp32 (all workers run one precision)",
                         precision.hardware)
    return precision
