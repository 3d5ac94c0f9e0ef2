"""Detectron2 side of the data: catalog mirroring and the dataset mapper.

* :func:`register_datasets` mirrors datasets of the framework-free catalog
  (:mod:`deepacc.data.catalog`) into Detectron2's ``DatasetCatalog`` / ``MetadataCatalog``
  (``thing_classes`` = the 24 chromosome names, ``evaluator_type`` "deepacc"). Importing
  :mod:`deepacc.d2` mirrors every dataset registered at that time; the trainer mirrors the names of
  ``DATASETS.TRAIN`` / ``DATASETS.TEST`` again, so datasets registered later are found too.
* :class:`DeepACCDatasetMapper` reads an image with the project's one reader
  (:func:`deepacc.data.images.read_image`, grayscale), brings it to dark-on-light by
  ``INPUT.POLARITY`` (:func:`deepacc.data.polarity.apply_polarity`, as the torchvision engine does),
  normalises it like the torchvision engine
  (``INPUT.NORMALIZATION``), applies ``ResizeShortestEdge`` and (training) ``RandomFlip`` from the
  cfg, and returns the 3-channel float tensor and the ``Instances`` Detectron2 models expect.
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..data import catalog
from ..data.images import read_image
from ..data.polarity import apply_polarity, check_polarity_mode
from ..karyotype.classes import CLASS_NAMES

__all__ = ["register_datasets", "DeepACCDatasetMapper"]

#: Metadata of the framework-free catalog copied into ``MetadataCatalog`` (besides thing_classes and
#: evaluator_type). ``json_file`` is deliberately not copied: ``COCOEvaluator`` would read its
#: category ids (1..24) as contiguous ids (0..23); without it, it converts the dataset dicts.
_COPIED_METADATA = ("image_root", "dataset_dir", "split", "prepare_command")


def register_datasets(names: Optional[Iterable[str]] = None) -> List[str]:
    """Mirror datasets of :mod:`deepacc.data.catalog` into Detectron2's catalogs (idempotent).

    Args:
        names: the datasets to mirror (default: every dataset of the framework-free catalog).
            A name already in ``DatasetCatalog`` (registered directly with Detectron2) is left
            as it is; a name in neither catalog raises ``KeyError`` listing the known names.
    Returns:
        the names now registered by this function (already-mirrored ones included).
    """
    known = set(catalog.list_datasets())
    names = sorted(known) if names is None else list(names)
    done = []
    for name in names:
        if name not in known:
            if name in DatasetCatalog.list():
                continue  # a Detectron2-only dataset: the user registered it themselves
            raise KeyError(f"dataset {name!r} is registered neither in deepacc.data.catalog nor in Detectron2's "
                           f"DatasetCatalog; known datasets: {', '.join(sorted(known))}")
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, functools.partial(catalog.get_dataset_dicts, name))
        meta = catalog.get_metadata(name)
        values: Dict[str, Any] = {
            "thing_classes": list(meta.get("class_names", CLASS_NAMES)),
            "evaluator_type": meta.get("evaluator_type", "deepacc"),
        }
        values.update({k: meta[k] for k in _COPIED_METADATA if meta.get(k) is not None})
        m = MetadataCatalog.get(name)
        for key, value in values.items():
            if not hasattr(m, key):
                setattr(m, key, value)
            elif getattr(m, key) != value:
                raise ValueError(f"dataset {name!r}: MetadataCatalog already has {key}={getattr(m, key)!r}, "
                                 f"the DeepACC catalog says {value!r}")
        done.append(name)
    return done


def _normalize_image(gray: np.ndarray, mode: str, stats=None) -> np.ndarray:
    # The formula lives in one place, the core, shared with the torchvision engine.
    from ..data.transforms import normalize_image

    return normalize_image(gray, mode, stats)


class DeepACCDatasetMapper:
    """Dataset dict -> model input dict (Detectron2's format).

    Output keys: ``image`` (3, H, W) float32 (the grayscale image repeated on 3 channels;
    with ``INPUT.NORMALIZATION == "per_image"`` standardised by its own mean and std, computed on
    the original image before resizing, as in the torchvision engine; then set
    ``MODEL.PIXEL_MEAN [0, 0, 0]`` and ``MODEL.PIXEL_STD [1, 1, 1]``), ``height``/``width`` (the
    original size, for ``detector_postprocess``), ``image_id``, ``file_name``, and for training
    ``instances`` (``gt_boxes``, ``gt_classes``). Crowd annotations are dropped. The image is first
    brought to dark-on-light by ``INPUT.POLARITY`` (``polarity``; :meth:`prepare_image` leaves what
    it did in :attr:`last_polarity`).
    """

    @configurable
    def __init__(self, is_train: bool, *, augmentations: List, normalization: str = "per_image", scale_cfg=None,
                 polarity: str = "auto"):
        if normalization not in ("per_image", "none"):
            raise ValueError(f"INPUT.NORMALIZATION must be 'per_image' or 'none', got {normalization!r}")
        self.polarity = check_polarity_mode(polarity)
        self.last_polarity = None
        self.is_train = bool(is_train)
        self.augmentations = T.AugmentationList(augmentations)
        self.normalization = normalization
        # inference with INPUT.SCALE_AWARE: each image's own factor (deepacc.data.scale) replaces the
        # ResizeShortestEdge of the augmentations
        self.scale_cfg = scale_cfg

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": utils.build_augmentation(cfg, is_train),
            "normalization": cfg.INPUT.NORMALIZATION,
            "scale_cfg": cfg if not is_train and cfg.INPUT.SCALE_AWARE.ENABLED else None,
            "polarity": cfg.INPUT.get("POLARITY", "auto"),
        }

    def prepare_image(self, gray: np.ndarray):
        """``(H, W)`` grayscale -> ``(image (3, h, w) float32 tensor, applied transforms)``; the image
        is brought to dark-on-light first (``INPUT.POLARITY``, recorded in :attr:`last_polarity`)."""
        if gray.ndim != 2:
            raise ValueError(f"expected a (H, W) grayscale image, got shape {gray.shape}")
        gray, self.last_polarity = apply_polarity(gray, self.polarity)
        self.last_scale = None
        if self.scale_cfg is not None:
            from ..data.scale import input_stats, resize_factor

            factor, self.last_scale = resize_factor(gray, self.scale_cfg)
            image = _normalize_image(gray, self.normalization, input_stats(self.last_scale)).astype(np.float32,
                                                                                                   copy=False)
            if self.last_scale["mode"] == "scale_aware":
                h, w = gray.shape
                new_h, new_w = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
                transforms = T.TransformList([T.ResizeTransform(h, w, new_h, new_w)])
                image = transforms.apply_image(image)
                return (torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).expand(3, new_h, new_w).contiguous(),
                        transforms)
        else:
            image = _normalize_image(gray, self.normalization).astype(np.float32, copy=False)
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        image = aug.image
        h, w = image.shape[:2]
        return torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).expand(3, h, w).contiguous(), transforms

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.deepcopy(dataset_dict)
        gray = read_image(d["file_name"])
        utils.check_image_size(d, gray)
        d["image"], transforms = self.prepare_image(gray)
        if self.last_scale is not None:
            d["input_scale"] = self.last_scale
        h, w = d["image"].shape[1:]
        annotations = d.pop("annotations", None)
        if not self.is_train or annotations is None:
            return d
        annos = [utils.transform_instance_annotations(a, transforms, (h, w))
                 for a in annotations if int(a.get("iscrowd", 0)) == 0]
        d["instances"] = utils.filter_empty_instances(utils.annotations_to_instances(annos, (h, w)))
        return d
