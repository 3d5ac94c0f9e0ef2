"""Multi-process launch with Detectron2's flags: ``--num-gpus``, ``--num-machines``, ``--machine-rank``,
``--dist-url``. NCCL when CUDA is available, gloo on CPU (``--num-gpus N`` then means N CPU processes).
"""
from __future__ import annotations

import logging
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(main_func, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = None, args=(), timeout=DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of ``num_machines``."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// init is unreliable across machines; prefer tcp://")
    mp.start_processes(_worker, nprocs=num_gpus_per_machine,
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
                       daemon=False, start_method="spawn")


def _worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout):
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= num_gpus_per_machine
    backend = "nccl" if use_cuda else "gloo"
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=timeout)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.barrier()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
