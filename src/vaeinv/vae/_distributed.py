"""Training on several processes (``torchrun``) with DistributedDataParallel (private).

Under ``torchrun --nproc_per_node P`` every process runs the same training call. They hold the
same weights from the same seed, shuffle each epoch's training fields in the same order (a
generator derived from the seed and the epoch, not the one of a single-process run), and each
process takes every ``P``-th field of each batch of ``batch_size``; DistributedDataParallel
averages the gradients, so one optimizer step sees the whole batch as one process would. The
reparameterisation noise is each process's own (derived from the seed, the epoch and the rank):
the loss curve is a single process's up to that noise and the batch order. The per-epoch
generators make a resumed run repeat the uninterrupted one on any number of processes. The first
process validates, writes every file and shows the progress; the others wait for it.

A single process (no process group) changes nothing: one generator shuffles and draws the
noise, as it always has, so a seed gives the same weights as before.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["Parallel", "init_from_environment"]

#: mixes the seed, the epoch and the rank into one generator seed
_EPOCH_STRIDE = 1_000_003
_RANK_STRIDE = 7919


def init_from_environment(device: str | torch.device = "cpu") -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE > 1``):
    gloo on the CPU, NCCL on CUDA. Returns whether training is distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_world_size() > 1


class Parallel:
    """The training loop's view of the processes: one (identity) or a torchrun group."""

    def __init__(self) -> None:
        import torch.distributed as dist

        on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if on else 0
        self.size = dist.get_world_size() if on else 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that validates, writes the files and shows progress."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def epoch_batches(
        self, train_index: torch.Tensor, batch_size: int, generator: torch.Generator, seed: int,
        epoch: int,
    ) -> tuple[list[torch.Tensor], torch.Generator]:  # fmt: skip
        """This process's index batches of an epoch and the generator of its noise."""
        if not self.distributed:
            order = train_index[torch.randperm(len(train_index), generator=generator)]
            return list(order.split(batch_size)), generator
        shuffler = torch.Generator().manual_seed(seed + _EPOCH_STRIDE * epoch)
        order = train_index[torch.randperm(len(train_index), generator=shuffler)]
        batches = list(order.split(batch_size))
        if len(batches) > 1 and len(batches[-1]) < self.size:  # every process needs a share
            batches[-2:] = [torch.cat(batches[-2:])]
        noise = torch.Generator().manual_seed(
            seed + _EPOCH_STRIDE * epoch + _RANK_STRIDE * (self.rank + 1)
        )
        return [b[self.rank :: self.size] for b in batches], noise

    def total(self, sums: dict[str, float], count: int) -> dict[str, float]:
        """The mean terms over every process's fields (each passes its sums and count)."""
        if not self.distributed:
            return {key: value / count for key, value in sums.items()}
        import torch.distributed as dist

        keys = sorted(sums)
        packed = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64)
        dist.all_reduce(packed)
        return {k: float(packed[i] / packed[-1]) for i, k in enumerate(keys)}

    def share(self, value: Any) -> Any:
        """The main process's ``value`` on every process."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wait(self) -> None:
        """Every process waits here for the others (the main one writing its files)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()
