"""The processes of a run under `torchrun` (training and batch prediction alike): this one's rank,
the world size, and the device it works on.

    rank, world, device = setup()   # (0, 1, cuda:0 or cpu) when launched alone
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> tuple[int, int, torch.device]:
    """This process's rank, the world size and its device, from torchrun's environment; rank 0
    of 1 when alone. With GPUs each process takes its own (`LOCAL_RANK`) before joining the NCCL
    group; without, the CPU and gloo. A group already joined is not joined again."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return (dist.get_rank() if world > 1 else 0), world, device
