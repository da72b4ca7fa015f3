"""Building blocks with stacked weights: many same-shaped linears run as one matmul.

Conventions: a stack of `n` linears holds weight (n, out, in) and bias (n, out)
(nn.Linear's layout per slice). Two ways to run it:

- `from_shared(x)`: every member reads the same x (batch, in). The stack is
  viewed as ONE (n*out, in) linear: a single GEMM, no copy.
- `grouped(x)`: member i reads x[i] (n, batch, in): one batched matmul
  (baddbmm) over the stack.

Each slice is initialised independently like nn.Linear (kaiming-uniform), so
experts start different (a known pitfall of public implementations).
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class StackedLinear(nn.Module):
    def __init__(self, count: int, in_features: int, out_features: int):
        super().__init__()
        self.count = count
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(count, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(count, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        for index in range(self.count):
            # Same as nn.Linear.reset_parameters, slice by slice: independent draws.
            nn.init.kaiming_uniform_(self.weight.data[index], a=math.sqrt(5))
            nn.init.uniform_(self.bias.data[index], -bound, bound)

    @torch.jit.export
    def from_shared(self, x: Tensor) -> Tensor:
        """x (batch, in) -> (batch, count, out)."""
        weight = self.weight.reshape(self.count * self.out_features, self.in_features)
        return F.linear(x, weight, self.bias.reshape(-1)).reshape(x.shape[0], self.count, self.out_features)

    @torch.jit.export
    def grouped(self, x: Tensor) -> Tensor:
        """x (count, batch, in) -> (count, batch, out)."""
        weight = self.weight.transpose(1, 2)  # a view; BLAS reads it transposed
        return torch.baddbmm(self.bias.unsqueeze(1), x, weight)


class StackedMLP(nn.Module):
    """`count` independent MLPs of the same shape (towers, experts, single-task nets).

    ReLU after every layer except (when `output_dim` is given) the last linear.
    """

    def __init__(self, count: int, in_features: int, hidden: List[int], output_dim: int | None = None):
        super().__init__()
        sizes = [in_features] + list(hidden) + ([output_dim] if output_dim is not None else [])
        if len(sizes) < 2:
            raise ValueError("StackedMLP needs at least one layer")
        self.layers = nn.ModuleList(
            [StackedLinear(count, sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)])
        self.activate_last = output_dim is None
        self.count = count
        self.output_dim = sizes[-1]

    @torch.jit.export
    def from_shared(self, x: Tensor) -> Tensor:
        """x (batch, in), read by every member -> (count, batch, out)."""
        return self._run(x, True)

    @torch.jit.export
    def grouped(self, x: Tensor) -> Tensor:
        """x (count, batch, in), member i reads x[i] -> (count, batch, out)."""
        return self._run(x, False)

    def _run(self, x: Tensor, shared_input: bool) -> Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if index == 0 and shared_input:
                x = layer.from_shared(x).transpose(0, 1)
            else:
                x = layer.grouped(x)
            if index < last or self.activate_last:
                x = torch.relu(x)
        return x

    @torch.jit.export
    def batch_major(self, x: Tensor, runs: List[List[int]]) -> Tensor:
        """Experts of a level, output (batch, count, out) contiguous: the layout gate mixing reads.

        x is (batch, n_inputs, in); runs = [[input, first member, end member], ...]
        cover the members in order, member m reading x[:, input] for m in
        [first, end). The first layer runs as one GEMM per run on a strided
        view of x (no gather, no copy of the input); the outputs are
        concatenated in member order, i.e. already (batch, count * out).
        """
        first = self.layers[0]
        if len(runs) == 1:
            weight = first.weight.reshape(first.count * first.out_features, first.in_features)
            h = F.linear(x.select(1, runs[0][0]), weight, first.bias.reshape(-1))
        else:
            # split/unbind rather than slicing/select: their backward is one cat/stack,
            # not a zero-filled full-size gradient per piece.
            sizes = [run[2] - run[1] for run in runs]
            weights = first.weight.split(sizes, dim=0)
            biases = first.bias.split(sizes, dim=0)
            inputs = x.unbind(1)
            parts: List[Tensor] = []
            for index, run in enumerate(runs):
                weight = weights[index].reshape(sizes[index] * first.out_features, first.in_features)
                parts.append(F.linear(inputs[run[0]], weight, biases[index].reshape(-1)))
            h = torch.cat(parts, dim=1)
        batch = h.shape[0]
        if len(self.layers) == 1:
            if self.activate_last:
                h = torch.relu_(h)  # in place on the fresh GEMM/cat output: no extra activation buffer
            return h.reshape(batch, self.count, first.out_features)
        h = torch.relu(h).reshape(batch, self.count, first.out_features).transpose(0, 1)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if index > 0:
                h = layer.grouped(h)
                if index < last or self.activate_last:
                    h = torch.relu(h)
        return h.transpose(0, 1).contiguous()


class ExtractionLevel(nn.Module):
    """One level of experts and softmax gates (a CGC / MMoE / PLE extraction layer).

    Experts are numbered 0..E-1. Expert e reads input `expert_input[e]`; gate g
    reads input `gate_input[g]` and mixes only the experts in `gate_experts[g]`.
    Inputs come as one tensor (batch, n_inputs, in); a level whose inputs are all
    the same tensor (level 1: the embeddings) gets `shared_input=True` and
    (batch, in), and then every expert and every gate is one GEMM on it.

    All gates of the level are ONE matmul: each gate's weight rows are stored
    packed (rows = its own experts only, the paper's (m_k + m_s) x d shape) and
    scattered into a dense (G, E, in) view at run time; logits of experts a
    gate may not see are set to -inf, so their softmax weight is exactly 0 and
    no gradient reaches those experts through that gate. As in the paper the
    gate is softmax(W x), no bias.

    Returns (gate outputs (batch, G, expert_dim), gate weights (batch, G, E)).
    """

    def __init__(self, in_features: int, expert_hidden: List[int], expert_input: List[int],
                 gate_input: List[int], gate_experts: List[List[int]], shared_input: bool):
        super().__init__()
        num_experts = len(expert_input)
        num_gates = len(gate_input)
        if num_experts == 0:
            raise ValueError("a level needs at least one expert")
        for gate, allowed in enumerate(gate_experts):
            if not allowed:
                raise ValueError(f"gate {gate} has no experts to mix")
        self.num_experts = num_experts
        self.num_gates = num_gates
        self.shared_input = shared_input
        self.experts = StackedMLP(num_experts, in_features, expert_hidden)
        self.expert_dim = self.experts.output_dim
        self.register_buffer("expert_input_index", torch.tensor(expert_input, dtype=torch.long))
        self.register_buffer("gate_input_index", torch.tensor(gate_input, dtype=torch.long))
        # Packed gate rows + where each dense (gate, expert) slot reads its row from.
        packed_rows = sum(len(allowed) for allowed in gate_experts)
        self.gate_weight = nn.Parameter(torch.empty(packed_rows, in_features))
        dense_index = torch.zeros(num_gates, num_experts, dtype=torch.long)
        logit_mask = torch.full((num_gates, num_experts), float("-inf"))
        row = 0
        bound = 1.0 / math.sqrt(in_features)
        for gate, allowed in enumerate(gate_experts):
            # nn.Linear-style init per gate, independent draws.
            nn.init.uniform_(self.gate_weight.data[row:row + len(allowed)], -bound, bound)
            for expert in allowed:
                dense_index[gate, expert] = row
                logit_mask[gate, expert] = 0.0
                row += 1
        self.register_buffer("gate_dense_index", dense_index.reshape(-1))
        # Experts reading the same input, in runs of consecutive members (PLE numbers
        # them task by task, shared last, so each input is one run).
        self.expert_runs: List[List[int]] = [[0, 0, num_experts]] if shared_input else _runs(expert_input)
        self.gates_read_prefix: bool = list(gate_input) == list(range(num_gates))
        self.register_buffer("gate_logit_mask", logit_mask)

    def forward(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        gate_weight = self.gate_weight.index_select(0, self.gate_dense_index)  # (G*E, in)
        batch = inputs.shape[0]
        if self.shared_input:
            experts = self.experts.batch_major(inputs.unsqueeze(1), self.expert_runs)      # (B, E, D)
            logits = F.linear(inputs, gate_weight).reshape(batch, self.num_gates, self.num_experts)
        else:
            # Experts grouped by the input they read: one GEMM per run on a view, no gather.
            experts = self.experts.batch_major(inputs, self.expert_runs)      # (B, E, D)
            dense = gate_weight.reshape(self.num_gates, self.num_experts, -1)
            extra = inputs.shape[1] - self.num_gates
            if self.gates_read_prefix and extra >= 0:
                # Gate g reads input g. Run the bmm over ALL inputs (zero weights for the
                # inputs no gate reads, e.g. the shared one at the last level) and drop those
                # logits: a narrow of the tiny logits instead of the (B, G, in) inputs, whose
                # backward would zero-fill and copy a gradient of the inputs' size.
                if extra > 0:
                    dense = torch.cat([dense, dense.new_zeros(extra, self.num_experts, dense.shape[2])], dim=0)
                logits = torch.bmm(inputs.transpose(0, 1), dense.transpose(1, 2))
                logits = logits[:self.num_gates].transpose(0, 1)                            # (B, G, E)
            else:
                gate_in = inputs.index_select(1, self.gate_input_index).transpose(0, 1)      # (G, B, in)
                logits = torch.bmm(gate_in, dense.transpose(1, 2)).transpose(0, 1)          # (B, G, E)
        weights = torch.softmax(logits.float() + self.gate_logit_mask, dim=-1)
        # Per-sample mixing as one batched matmul over the contiguous (B, E, D)
        # expert outputs (batch-major straight from the expert GEMMs, no copy).
        mixed = torch.bmm(weights.to(experts.dtype), experts)                              # (B, G, D)
        return mixed, weights


def _runs(expert_input: List[int]) -> List[List[int]]:
    """[[input, first, end], ...]: maximal runs of consecutive experts reading the same input."""
    runs: List[List[int]] = []
    for member, source in enumerate(expert_input):
        if runs and runs[-1][0] == source:
            runs[-1][2] = member + 1
        else:
            runs.append([source, member, member + 1])
    return runs
