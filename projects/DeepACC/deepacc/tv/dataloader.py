"""Data pipeline of the torchvision engine: dataset dicts -> image tensors + targets, samplers, loaders."""
from __future__ import annotations

import itertools
import logging
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.catalog import get_dataset_dicts
from ..data.polarity import apply_polarity, check_polarity_mode
from ..data.scale import input_stats
from ..data.transforms import to_model_input
from . import comm

logger = logging.getLogger(__name__)


def dataset_dicts(names: Sequence[str]) -> List[Dict]:
    """The dataset dicts of the registered datasets ``names``, concatenated."""
    out = []
    for name in names:
        out.extend(get_dataset_dicts(name))
    return out


class MetaphaseMapper:
    """Reads one dataset dict into ``(image (3,H,W) float, target, dataset_dict)``; ``target`` holds
    ``boxes`` (xyxy) and the core ``classes`` (0..K-1).

    The image is read with :func:`deepacc.data.images.read_image` and brought to dark-on-light by
    ``INPUT.POLARITY`` (:func:`deepacc.data.polarity.apply_polarity`: ``"auto"`` inverts a
    bright-on-dark image, leaves any other one untouched). Training applies the paper's only
    augmentation: a horizontal flip with p = 0.5 (``INPUT.RANDOM_FLIP == "horizontal"``).
    Resizing is the model's (``INPUT.MIN_SIZE_*``); at
    inference with ``INPUT.SCALE_AWARE`` the record also carries ``input_scale`` (the factor and what
    decided it, :func:`deepacc.data.scale.resize_factor`), which the inference loop hands to the model.
    """

    def __init__(self, cfg, is_train: bool):
        self.is_train = is_train
        # inference: the scale-aware factor of each image (deepacc.data.scale), None = the usual rule
        self.scale_cfg = None if is_train or not cfg.INPUT.SCALE_AWARE.ENABLED else cfg
        self.normalization = cfg.INPUT.NORMALIZATION
        self.polarity = check_polarity_mode(cfg.INPUT.get("POLARITY", "auto"))
        self.flip = is_train and cfg.INPUT.RANDOM_FLIP == "horizontal"
        if is_train and cfg.INPUT.RANDOM_FLIP not in ("horizontal", "none"):
            raise ValueError(f"INPUT.RANDOM_FLIP {cfg.INPUT.RANDOM_FLIP!r} is not supported by this engine")

    def __call__(self, d: Dict):
        from ..data.images import read_image

        gray, _ = apply_polarity(read_image(d["file_name"]), self.polarity)
        h, w = gray.shape[:2]
        if (d.get("height"), d.get("width")) not in ((None, None), (h, w)):
            raise ValueError(f"{d['file_name']}: image is {w}x{h} but the dataset says {d['width']}x{d['height']}")
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)
        if self.flip and torch.rand(()) < 0.5:
            gray = gray[:, ::-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        info = None
        if self.scale_cfg is not None:
            from ..data.scale import resize_factor

            _, info = resize_factor(gray, self.scale_cfg)
            d = dict(d, input_scale=info)
        image = to_model_input(gray, self.normalization, input_stats(info))
        target = {"boxes": boxes, "classes": classes}
        return image, target, d


class _MappedDataset(Dataset):
    def __init__(self, dicts: Sequence[Dict], mapper):
        self.dicts, self.mapper = list(dicts), mapper

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, i):
        return self.mapper(self.dicts[i])


class TrainingSampler(Sampler):
    """Infinite, shuffled, rank-sharded index stream, deterministic in ``seed``.

    ``start`` skips that many *global* samples, so a run resumed at iteration ``t`` sees exactly the
    batches an uninterrupted run would have seen from ``t`` on.
    """

    def __init__(self, size: int, seed: int = 0, start: int = 0):
        if size <= 0:
            raise ValueError("the training set is empty")
        self.size, self.seed, self.start = size, int(seed), int(start)
        self.rank, self.world = comm.get_rank(), comm.get_world_size()

    def _global(self) -> Iterator[int]:
        g = torch.Generator()
        for epoch in itertools.count():
            g.manual_seed(self.seed + epoch)
            yield from torch.randperm(self.size, generator=g).tolist()

    def __iter__(self):
        yield from itertools.islice(self._global(), self.start + self.rank, None, self.world)


class InferenceSampler(Sampler):
    """Contiguous shard of ``range(size)`` for this rank (every index exactly once over all ranks)."""

    def __init__(self, size: int):
        rank, world = comm.get_rank(), comm.get_world_size()
        per = (size - 1) // world + 1 if size else 0
        self.indices = list(range(min(rank * per, size), min((rank + 1) * per, size)))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _collate(batch):
    return batch


def _workers(cfg) -> int:
    return max(0, int(cfg.DATALOADER.NUM_WORKERS))


def _worker_init(_worker_id: int) -> None:
    """One torch thread per loader worker: a mapper reads and standardises one image, and workers that
    spawn a thread per core steal the cores the model's step runs on (a 2-core CPU has no spare).

    OpenCV is left alone: ``cv2.setNumThreads`` in a worker forked from a process whose OpenCV thread
    pool has started (the synthetic generator, a karyogram) blocks forever (measured), and the
    mappers do not call OpenCV (images are read with Pillow, chromosome sizes with numpy/scipy)."""
    torch.set_num_threads(1)


def filter_empty(dicts: List[Dict]) -> List[Dict]:
    kept = [d for d in dicts if len(d.get("annotations", [])) > 0]
    if len(kept) < len(dicts):
        logger.info("Removed %d images with no chromosomes from training.", len(dicts) - len(kept))
    return kept


def build_train_loader(cfg, dicts: List[Dict], start_iter: int = 0) -> DataLoader:
    world = comm.get_world_size()
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total % world != 0:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes ({world})")
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_empty(dicts)
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    sampler = TrainingSampler(len(dicts), seed=seed, start=start_iter * total)
    return DataLoader(_MappedDataset(dicts, MetaphaseMapper(cfg, True)), batch_size=total // world,
                      sampler=sampler, num_workers=_workers(cfg), collate_fn=_collate,
                      persistent_workers=_workers(cfg) > 0, worker_init_fn=_worker_init)


def build_test_loader(cfg, dicts: List[Dict], mapper: Optional[MetaphaseMapper] = None) -> DataLoader:
    ds = _MappedDataset(dicts, mapper or MetaphaseMapper(cfg, False))
    return DataLoader(ds, batch_size=1, sampler=InferenceSampler(len(ds)),
                      num_workers=min(_workers(cfg), 2), collate_fn=_collate, worker_init_fn=_worker_init)
