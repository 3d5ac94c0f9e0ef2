"""Per-process setup of the torchvision engine: logging, random seeds, device."""
from __future__ import annotations

import logging
import os
import random
from typing import Optional

import numpy as np
import torch

from . import comm

logger = logging.getLogger("deepacc")


def setup_logging(output_dir: Optional[str]) -> None:
    """INFO logging to stderr (rank 0) and to ``output_dir/log.txt``; calling it again (another run in
    the same process) replaces the handlers it added before, so each run logs to its own folder."""
    rank = comm.get_rank()
    root = logging.getLogger()
    for h in getattr(root, "_deepacc_handlers", []):
        root.removeHandler(h)
        h.close()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter(f"[%(asctime)s r{rank}] %(name)s %(levelname)s: %(message)s", "%m/%d %H:%M:%S")
    handlers = []
    if rank == 0:
        handlers.append(logging.StreamHandler())
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        from ..fileio import LogFileHandler  # appends, never through a symbolic link

        handlers.append(LogFileHandler(os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root._deepacc_handlers = handlers


def resolve_device(cfg) -> torch.device:
    """``MODEL.DEVICE``, falling back to the CPU without CUDA; this process's GPU under DDP."""
    want = str(cfg.MODEL.DEVICE)
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            logger.warning("MODEL.DEVICE is %s but CUDA is not available: running on CPU.", want)
            return torch.device("cpu")
        if comm.get_world_size() > 1:
            return torch.device("cuda", torch.cuda.current_device())
    return torch.device(want)


def seed_all(seed: int) -> int:
    """Seed Python, numpy and torch with ``seed`` + rank (a random seed when ``seed`` < 0); returns it."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(2), "little")
    seed += comm.get_rank()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed
