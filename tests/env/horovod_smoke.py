"""Run under `horovodrun -np 2 --gloo`: allreduce + one DistributedOptimizer step.

Prints one JSON line per rank so the test can check what each worker saw.
"""

import json

import horovod.torch as hvd
import torch

hvd.init()
rank, size = hvd.rank(), hvd.size()

total = hvd.allreduce(torch.tensor([float(rank + 1)]), op=hvd.Sum).item()

torch.manual_seed(1234 + rank)  # ranks start different on purpose ...
model = torch.nn.Linear(4, 1)
hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # ... until the broadcast
optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                     named_parameters=model.named_parameters())
hvd.broadcast_optimizer_state(optimizer, root_rank=0)

x = torch.full((8, 4), float(rank + 1))  # each rank sees different data
loss = model(x).pow(2).mean()
optimizer.zero_grad()
loss.backward()
optimizer.step()

weights = model.weight.detach().flatten().tolist()
print("RESULT " + json.dumps({"rank": rank, "size": size, "allreduce_sum": total, "weights": weights}), flush=True)
