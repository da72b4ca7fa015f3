"""Multi-task architectures, built by name: build_model(name, spec, **hyperparameters).

Every model maps {feature_name: tensor} -> {task_name: (batch,) tensor}:
logits for binary tasks, values for regression tasks (float32, also under
bf16 autocast). `forward_with_gates(features)` also returns the gate weights
of every level, (batch, n_gates, n_experts) each; `gate_layout` names the
gates and experts of each level (see ple_model.metrics.gate_usage).

Models (paper defaults: single-layer experts, towers [256, 128, 64] ReLU):

- single_task: one fully independent network per task (own embeddings,
  bottom MLP, tower; nothing shared). Trained together with the others
  because nothing is shared: each task's parameters only ever get its own
  loss's gradient, which equals training it alone (with per-parameter
  optimizers such as Adam/SGD; a global-norm gradient clip would couple them,
  so don't clip when training the baseline). `task="name"` builds only that
  task's network.
- shared_bottom: hard parameter sharing: a shared MLP, then one tower per task.
- mmoe: shared experts mixed by one softmax gate per task (Ma et al. 2018).
- cross_stitch: one column per task, cross-stitch units (learned K x K
  mixing, Misra et al. 2016) after every column layer.
- cgc: PLE with one level.
- ple: `num_levels` extraction levels with task-specific and shared experts.
- ml_mmoe: stacked MMoE levels (PLE without task-specific experts).

Every model takes `task_bias_features` (default none): categorical features whose ids get one
learned scalar per task, added to each task's output (ple_model.input_layer.TaskIdBias).

Speed: every level's experts run as one GEMM/batched matmul on stacked
weights, all gates of a level as one more, the towers of all tasks as one
batched MLP. No BatchNorm/dropout (the paper has none).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from torch import Tensor, nn

from .input_layer import FeatureInput, TaskIdBias
from .layers import ExtractionLevel, StackedLinear, StackedMLP
from .spec import ModelSpec

PAPER_TOWER = (256, 128, 64)
PAPER_EXPERT = (256,)


class GateLayout:
    """Names of one level's gates (rows) and experts (columns)."""

    def __init__(self, level: int, gate_names: List[str], expert_names: List[str],
                 gate_experts: List[List[int]]):
        self.level = level
        self.gate_names = gate_names
        self.expert_names = expert_names
        self.gate_experts = gate_experts

    def __repr__(self) -> str:
        return f"GateLayout(level={self.level}, gates={self.gate_names}, experts={self.expert_names})"


class MultiTaskModel(nn.Module):
    """Base: subclasses implement `compute(features) -> (outputs (batch, K), gate weights per level)`."""

    def __init__(self, spec: ModelSpec, task_names: Sequence[str] | None = None,
                 task_bias_features: Sequence[str] = ()):
        super().__init__()
        spec.check_buildable()
        self.spec = spec
        self.task_names: List[str] = list(task_names if task_names is not None else spec.task_names)
        self.gate_layout: List[GateLayout] = []
        self.hyperparameters: Dict[str, Any] = {}
        # 0 or 1 TaskIdBias: a ModuleList so that TorchScript compiles both cases and a model
        # without biases keeps exactly the state_dict it had before the option existed.
        self.task_bias = nn.ModuleList(
            [TaskIdBias(spec, task_bias_features, len(self.task_names))] if len(task_bias_features) else [])

    def forward(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        outputs, _ = self.compute(features)
        return self._as_dict(self._with_task_bias(outputs, features))

    @torch.jit.export
    def forward_with_gates(self, features: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], List[Tensor]]:
        outputs, gates = self.compute(features)
        return self._as_dict(self._with_task_bias(outputs, features)), gates

    def _with_task_bias(self, outputs: Tensor, features: Dict[str, Tensor]) -> Tensor:
        for bias in self.task_bias:
            outputs = outputs.float() + bias(features)  # (batch, K) + (batch, K), in fp32 under autocast too
        return outputs

    def compute(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        raise NotImplementedError

    def _as_dict(self, outputs: Tensor) -> Dict[str, Tensor]:
        outputs = outputs.float()  # losses run in fp32 even under bf16 autocast
        result: Dict[str, Tensor] = {}
        for index, name in enumerate(self.task_names):
            result[name] = outputs[:, index]
        return result


def _towers(count: int, in_features: int, tower_hidden: Sequence[int]) -> StackedMLP:
    return StackedMLP(count, in_features, list(tower_hidden), output_dim=1)


class SingleTask(MultiTaskModel):
    def __init__(self, spec: ModelSpec, task: str | None = None,
                 bottom_hidden: Sequence[int] = PAPER_EXPERT, tower_hidden: Sequence[int] = PAPER_TOWER,
                 task_bias_features: Sequence[str] = ()):
        if task is not None and task not in spec.task_names:
            raise ValueError(f"single_task: unknown task {task!r}; tasks are {spec.task_names}")
        super().__init__(spec, [task] if task is not None else None, task_bias_features)
        _check_sizes("bottom_hidden", bottom_hidden)
        _check_sizes("tower_hidden", tower_hidden)
        count = len(self.task_names)
        # Independent embeddings per task: nothing is shared between tasks.
        self.task_inputs = nn.ModuleList([FeatureInput(spec) for _ in range(count)])
        self.task_networks = StackedMLP(count, spec.input_dim, list(bottom_hidden) + list(tower_hidden), output_dim=1)

    def compute(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        inputs = torch.stack([task_input(features) for task_input in self.task_inputs], dim=0)
        return self.task_networks.grouped(inputs).squeeze(-1).transpose(0, 1), []

    def state_dict_with_tasks_from(self, other: Mapping[str, Tensor], tasks: Sequence[str]) -> Dict[str, Tensor]:
        """This model's state_dict (copied), with the networks of `tasks` taken from `other`.

        `other` is a state_dict of a model built the same way (e.g. an earlier epoch's):
        task k owns `task_inputs.k.*` and slice k (dim 0) of every `task_networks.*`
        tensor, and nothing else exists, so the result is exactly "each task's network
        from the epoch it was taken from". Used to keep each task at its own best epoch.
        """
        unknown = sorted(set(tasks) - set(self.task_names))
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; this model has {self.task_names}")
        indices = [self.task_names.index(t) for t in tasks]
        merged: Dict[str, Tensor] = {}
        for key, value in self.state_dict().items():
            value = value.detach().clone()
            if key.startswith("task_networks."):
                for index in indices:
                    value[index] = other[key][index]
            elif key.startswith("task_inputs."):
                if int(key.split(".")[1]) in indices:
                    value = other[key].detach().clone()
            elif key.startswith("task_bias.") and key.endswith(".table"):
                for index in indices:  # column k of the (ids, K) bias table is task k's
                    value[:, index] = other[key][:, index]
            elif key.startswith("task_bias."):
                pass  # the table's offsets / sizes: the same in both (same spec)
            else:
                raise KeyError(f"state entry {key!r} belongs to no task; cannot merge per task")
            merged[key] = value
        return merged


class SharedBottom(MultiTaskModel):
    def __init__(self, spec: ModelSpec, bottom_hidden: Sequence[int] = PAPER_EXPERT,
                 tower_hidden: Sequence[int] = PAPER_TOWER, task_bias_features: Sequence[str] = ()):
        super().__init__(spec, task_bias_features=task_bias_features)
        _check_sizes("bottom_hidden", bottom_hidden)
        _check_sizes("tower_hidden", tower_hidden)
        self.feature_input = FeatureInput(spec)
        self.shared_bottom = StackedMLP(1, spec.input_dim, list(bottom_hidden))
        self.towers = _towers(len(self.task_names), self.shared_bottom.output_dim, tower_hidden)

    def compute(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        shared = self.shared_bottom.from_shared(self.feature_input(features))[0]
        return self.towers.from_shared(shared).squeeze(-1).transpose(0, 1), []


class CrossStitchLayer(nn.Module):
    """One layer of every task column, then a cross-stitch unit: column k <- sum_l alpha[k, l] * column l."""

    def __init__(self, count: int, in_features: int, out_features: int, first: bool, self_weight: float):
        super().__init__()
        self.columns = StackedLinear(count, in_features, out_features)
        self.first = first
        # Misra et al. initialise the units near identity (0.9 self, 0.1 spread over the others).
        other = (1.0 - self_weight) / (count - 1) if count > 1 else 0.0
        init = torch.full((count, count), other)
        init.fill_diagonal_(self_weight if count > 1 else 1.0)
        self.cross_stitch = nn.Parameter(init)

    def forward(self, x: Tensor) -> Tensor:
        # x: (batch, in) for the first layer (every column reads the input), else (K, batch, in).
        if self.first:
            columns = torch.relu(self.columns.from_shared(x)).transpose(0, 1)
        else:
            columns = torch.relu(self.columns.grouped(x))
        flat = columns.reshape(columns.shape[0], -1)
        return torch.matmul(self.cross_stitch.to(flat.dtype), flat).reshape(columns.shape)


class CrossStitch(MultiTaskModel):
    def __init__(self, spec: ModelSpec, column_hidden: Sequence[int] = PAPER_EXPERT,
                 tower_hidden: Sequence[int] = PAPER_TOWER, stitch_self_weight: float = 0.9,
                 task_bias_features: Sequence[str] = ()):
        super().__init__(spec, task_bias_features=task_bias_features)
        _check_sizes("column_hidden", column_hidden)
        _check_sizes("tower_hidden", tower_hidden)
        if not 0.0 <= stitch_self_weight <= 1.0:
            raise ValueError(f"stitch_self_weight must be in [0, 1], got {stitch_self_weight}")
        count = len(self.task_names)
        self.feature_input = FeatureInput(spec)
        sizes = [spec.input_dim] + list(column_hidden)
        self.layers = nn.ModuleList([
            CrossStitchLayer(count, sizes[i], sizes[i + 1], first=i == 0, self_weight=stitch_self_weight)
            for i in range(len(sizes) - 1)])
        self.towers = _towers(count, sizes[-1], tower_hidden)

    def compute(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        columns = self.feature_input(features)
        for layer in self.layers:
            columns = layer(columns)
        return self.towers.grouped(columns).squeeze(-1).transpose(0, 1), []


def _expert_counts(specific_experts: int | Sequence[int] | Mapping[str, int], task_names: List[str]) -> List[int]:
    if isinstance(specific_experts, Mapping):
        unknown = sorted(set(specific_experts) - set(task_names))
        missing = [t for t in task_names if t not in specific_experts]
        if unknown or missing:
            raise ValueError(f"specific_experts: unknown tasks {unknown}, missing tasks {missing}; tasks are {task_names}")
        counts = [int(specific_experts[t]) for t in task_names]
    elif isinstance(specific_experts, int):
        counts = [specific_experts] * len(task_names)
    else:
        counts = [int(c) for c in specific_experts]
        if len(counts) != len(task_names):
            raise ValueError(f"specific_experts has {len(counts)} entries for {len(task_names)} tasks {task_names}")
    if any(c < 0 for c in counts):
        raise ValueError(f"specific_experts must be >= 0, got {counts}")
    return counts


class PLE(MultiTaskModel):
    """Progressive Layered Extraction (Tang et al. 2020); CGC when num_levels == 1.

    Level j (1-based) has, per task k, `specific_experts[k]` experts and
    `shared_experts` shared experts. Inputs of level 1: the embeddings. Inputs
    of level j > 1: level j-1's gate outputs, one per task plus the shared
    one. Task k's gate and experts read input k; the shared experts and the
    shared gate read the shared input. Task k's gate mixes task k's experts and
    the shared experts; the shared gate (every level but the last) mixes ALL
    experts of its level. The last level's task-k output feeds tower k.
    """

    def __init__(self, spec: ModelSpec, num_levels: int = 2, specific_experts: Any = 1,
                 shared_experts: int = 1, expert_hidden: Sequence[int] = PAPER_EXPERT,
                 tower_hidden: Sequence[int] = PAPER_TOWER, task_bias_features: Sequence[str] = ()):
        super().__init__(spec, task_bias_features=task_bias_features)
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        if shared_experts < 0:
            raise ValueError(f"shared_experts must be >= 0, got {shared_experts}")
        _check_sizes("expert_hidden", expert_hidden)
        _check_sizes("tower_hidden", tower_hidden)
        counts = _expert_counts(specific_experts, self.task_names)
        for task, count in zip(self.task_names, counts):
            if count + shared_experts == 0:
                raise ValueError(f"task {task!r} has no experts (specific 0, shared 0)")
        num_tasks = len(self.task_names)
        self.feature_input = FeatureInput(spec)

        # Experts numbered task 0's, task 1's, ..., then the shared ones.
        expert_input: List[int] = []
        expert_names: List[str] = []
        task_experts: List[List[int]] = []
        for task_index, (task, count) in enumerate(zip(self.task_names, counts)):
            task_experts.append(list(range(len(expert_input), len(expert_input) + count)))
            expert_input += [task_index] * count
            expert_names += [f"{task}/{i}" for i in range(count)]
        shared_ids = list(range(len(expert_input), len(expert_input) + shared_experts))
        expert_input += [num_tasks] * shared_experts  # input index K = the shared input
        expert_names += [f"shared/{i}" for i in range(shared_experts)]

        self.levels = nn.ModuleList()
        in_features = spec.input_dim
        for level in range(num_levels):
            last = level == num_levels - 1
            gate_experts = [task_experts[k] + shared_ids for k in range(num_tasks)]
            gate_input = list(range(num_tasks))
            gate_names = list(self.task_names)
            if not last:
                gate_experts.append(list(range(len(expert_input))))
                gate_input.append(num_tasks)
                gate_names.append("shared")
            first = level == 0
            self.levels.append(ExtractionLevel(
                in_features, list(expert_hidden),
                expert_input=[0] * len(expert_input) if first else expert_input,
                gate_input=[0] * len(gate_input) if first else gate_input,
                gate_experts=gate_experts, shared_input=first))
            self.gate_layout.append(GateLayout(level + 1, gate_names, list(expert_names), gate_experts))
            in_features = self.levels[-1].expert_dim
        self.towers = _towers(num_tasks, in_features, tower_hidden)
        self.num_tasks = num_tasks

    def compute(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        x = self.feature_input(features)
        gates: List[Tensor] = []
        for level in self.levels:
            x, weights = level(x)  # (batch, K [+1 shared], d)
            gates.append(weights)
        per_task = x[:, :self.num_tasks].transpose(0, 1)  # (K, batch, d)
        return self.towers.grouped(per_task).squeeze(-1).transpose(0, 1), gates


class CGC(PLE):
    def __init__(self, spec: ModelSpec, specific_experts: Any = 1, shared_experts: int = 1,
                 expert_hidden: Sequence[int] = PAPER_EXPERT, tower_hidden: Sequence[int] = PAPER_TOWER,
                 task_bias_features: Sequence[str] = ()):
        super().__init__(spec, num_levels=1, specific_experts=specific_experts, shared_experts=shared_experts,
                         expert_hidden=expert_hidden, tower_hidden=tower_hidden,
                         task_bias_features=task_bias_features)


class MMoE(PLE):
    """MMoE = one level of shared experts only, one gate per task over all of them."""

    def __init__(self, spec: ModelSpec, num_experts: int = 4, expert_hidden: Sequence[int] = PAPER_EXPERT,
                 tower_hidden: Sequence[int] = PAPER_TOWER, task_bias_features: Sequence[str] = ()):
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        super().__init__(spec, num_levels=1, specific_experts=0, shared_experts=num_experts,
                         expert_hidden=expert_hidden, tower_hidden=tower_hidden,
                         task_bias_features=task_bias_features)


class MultiLevelMMoE(PLE):
    """ML-MMoE: stacked MMoE levels; a shared gate feeds each next level's experts."""

    def __init__(self, spec: ModelSpec, num_levels: int = 2, num_experts: int = 4,
                 expert_hidden: Sequence[int] = PAPER_EXPERT, tower_hidden: Sequence[int] = PAPER_TOWER,
                 task_bias_features: Sequence[str] = ()):
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        super().__init__(spec, num_levels=num_levels, specific_experts=0, shared_experts=num_experts,
                         expert_hidden=expert_hidden, tower_hidden=tower_hidden,
                         task_bias_features=task_bias_features)


def _check_sizes(name: str, sizes: Sequence[int]) -> None:
    if not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"{name} must be a list of positive ints, got {list(sizes)}")


MODELS: Dict[str, type] = {
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "cross_stitch": CrossStitch,
    "cgc": CGC,
    "ple": PLE,
    "ml_mmoe": MultiLevelMMoE,
}
MODEL_NAMES: Tuple[str, ...] = tuple(MODELS)


def model_hyperparameters(name: str) -> Dict[str, Any]:
    """The hyperparameters a model accepts, with their defaults."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {list(MODEL_NAMES)}")
    signature = inspect.signature(MODELS[name].__init__)
    return {p.name: p.default for p in list(signature.parameters.values())[2:]}


def build_model(name: str, spec: ModelSpec, **hyperparameters: Any) -> MultiTaskModel:
    """Build model `name` for `spec`; unknown names or hyperparameters raise ValueError listing valid ones."""
    valid = model_hyperparameters(name)
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise ValueError(f"model {name!r} has no hyperparameters {unknown}; valid: {sorted(valid)}")
    spec.check_buildable()
    model = MODELS[name](spec, **hyperparameters)
    model.hyperparameters = {**valid, **hyperparameters}
    return model
