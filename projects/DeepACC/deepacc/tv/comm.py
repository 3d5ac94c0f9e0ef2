"""Small helpers over ``torch.distributed`` (work when it is not initialised)."""
from __future__ import annotations

import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def all_gather(obj):
    """Gather a picklable object from every rank (a list, in rank order)."""
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_dict_mean(d: dict) -> dict:
    """Average a dict of python floats over ranks (for logging)."""
    if not is_dist() or get_world_size() == 1:
        return d
    gathered = all_gather(d)
    return {k: sum(g[k] for g in gathered) / len(gathered) for k in d}


def reduce_sum(values: list) -> list:
    """Element-wise sum of a list of numbers over all processes (the list itself when not distributed)."""
    if not is_dist():
        return list(values)
    return [sum(v) for v in zip(*all_gather(list(values)))]
